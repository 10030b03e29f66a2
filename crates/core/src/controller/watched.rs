//! Watched objects as the controller decodes them: without what it never reads. The managed
//! fields (often most of an object's JSON), the last-applied annotation and, per kind, the spec
//! or status the controller ignores are skipped while parsing instead of being built and thrown
//! away. Pure.

use std::borrow::{Borrow, Cow};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Weak};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::InvalidObject;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::aborts::podview::{PodJson, PodView};
use crate::api::{WorkerPool, WorkerPoolSpec, WorkerPoolStatus};

/// Annotation `kubectl apply` writes: a copy of the whole object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object of kind `K` decoded by [`Lean`]: everything the controller reads, nothing else.
/// Boxed, so that each watch event moves a pointer through the watch's stream stages instead
/// of the kilobytes a Deployment or a pool takes inline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watched<K>(pub Box<K>);

/// The type names of a wrapper are those of the kind it stands for.
macro_rules! resource_named_as {
    ($kind:ty) => {
        type DynamicType = ();
        type Scope = <$kind as Resource>::Scope;

        fn kind(dt: &()) -> Cow<'_, str> {
            <$kind>::kind(dt)
        }
        fn group(dt: &()) -> Cow<'_, str> {
            <$kind>::group(dt)
        }
        fn version(dt: &()) -> Cow<'_, str> {
            <$kind>::version(dt)
        }
        fn plural(dt: &()) -> Cow<'_, str> {
            <$kind>::plural(dt)
        }
    };
}

/// A lean form of `$kind` that holds its own `metadata`.
macro_rules! resource_with_own_metadata {
    ($lean:ty, $kind:ty) => {
        impl Resource for $lean {
            resource_named_as!($kind);

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A pod as the pod watch decodes it: straight into the view classification reads, plus the
/// identity and resource version a watch needs. The whole `Pod` is never built.
#[derive(Clone, Debug)]
pub struct ViewedPod {
    metadata: ObjectMeta,
    pub view: PodView,
}

impl<'de> Deserialize<'de> for ViewedPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (resource_version, view) = PodJson::deserialize(deserializer)?.into_view();
        let metadata = ObjectMeta {
            name: Some(view.name.to_string()),
            namespace: Some(view.namespace.to_string()),
            resource_version,
            ..ObjectMeta::default()
        };
        Ok(ViewedPod { metadata, view })
    }
}

resource_with_own_metadata!(ViewedPod, Pod);

/// A part the kind requires is absent.
pub struct Missing {
    pub metadata: Box<ObjectMeta>,
    pub field: &'static str,
}

/// How a kind is put back together from the parts the controller reads.
pub trait Lean: Sized {
    /// The spec as decoded; [`IgnoredAny`] skips it.
    type Spec: DeserializeOwned;
    /// The status as decoded; [`IgnoredAny`] skips it.
    type Status: DeserializeOwned;
    /// Fails only when a part the kind requires is missing; the metadata comes back with the error.
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Result<Self, Missing>;

    /// The spec of this object at this generation, when it is held already: the watch then skips
    /// the event's own.
    fn known_spec(_metadata: &WireMeta) -> Option<Self::Spec> {
        None
    }

    /// Called with each spec the watch decoded.
    fn remember_spec(_metadata: &WireMeta, _spec: &Self::Spec) {}
}

/// Kinds whose spec and status are both read, kept whole but for the metadata.
macro_rules! lean_keeps_spec_and_status {
    ($kind:ident, $spec:ty, $status:ty) => {
        impl Lean for $kind {
            type Spec = $spec;
            type Status = $status;
            fn assemble(
                metadata: ObjectMeta,
                spec: Option<$spec>,
                status: Option<$status>,
            ) -> Result<Self, Missing> {
                Ok($kind {
                    metadata,
                    spec,
                    status,
                })
            }
        }
    };
}

lean_keeps_spec_and_status!(Deployment, DeploymentSpec, DeploymentStatus);
lean_keeps_spec_and_status!(Job, JobSpec, JobStatus);

/// JSON kept as its compact text: a typed pod template takes about three times the heap of its
/// JSON, and only a reconcile reads it, once. Shared: the watch events of one generation of an
/// object hold the same text ([`KnownSpecs`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedJson(Arc<str>);

impl PackedJson {
    fn of<T: serde::Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(PackedJson(serde_json::to_string(value)?.into()))
    }
}

impl<'de> Deserialize<'de> for PackedJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(PackedJson(value.to_string().into()))
    }
}

/// Packed specs by the uid of their object, for as long as a cache holds them. An object's spec
/// changes only with its generation, so a watch event of a generation already seen (a status
/// update: most of a Deployment's events) takes the spec held already instead of parsing its
/// own. Per thread, as the watches decode on the thread that polls them.
#[derive(Default)]
struct KnownSpecs {
    by_uid: HashMap<Box<str>, (i64, Weak<str>)>,
    /// Entries left by the last sweep of those whose spec no cache holds any more.
    swept: usize,
}

thread_local! {
    static KNOWN_SPECS: RefCell<KnownSpecs> = RefCell::default();
}

impl KnownSpecs {
    fn get(metadata: &WireMeta) -> Option<PackedJson> {
        let (uid, generation) = (metadata.uid.as_deref()?, metadata.generation?);
        KNOWN_SPECS.with_borrow(|known| {
            let (seen, spec) = known.by_uid.get(uid)?;
            (*seen == generation).then(|| spec.upgrade().map(PackedJson))?
        })
    }

    fn remember(metadata: &WireMeta, spec: &PackedJson) {
        let (Some(uid), Some(generation)) = (metadata.uid.as_deref(), metadata.generation) else {
            return;
        };
        let entry = (generation, Arc::downgrade(&spec.0));
        KNOWN_SPECS.with_borrow_mut(|known| {
            match known.by_uid.get_mut(uid) {
                Some(held) => *held = entry,
                None => {
                    known.by_uid.insert(uid.into(), entry);
                }
            }
            // A dead entry keeps its spec's memory (a `Weak` holds the allocation); one whose
            // object changed generation was just replaced, and the deleted ones are swept.
            if known.by_uid.len() > 2 * known.swept + 64 {
                known.by_uid.retain(|_, (_, spec)| spec.strong_count() > 0);
                known.swept = known.by_uid.len();
            }
        });
    }
}

/// Labels and annotations kept as their compact JSON: two B-tree maps take about 1.5 KB of heap
/// for a handful of keys (a node holds room for eleven), and only a reconcile reads them, once.
/// The JSON of equal maps is equal (their keys are sorted), so watch events compare by it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PackedMarks(Option<Box<str>>);

#[derive(serde::Serialize, Deserialize)]
struct Marks {
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

impl PackedMarks {
    /// Takes the labels and annotations out of `metadata`.
    fn take(metadata: &mut ObjectMeta) -> Self {
        let marks = Marks {
            labels: metadata.labels.take(),
            annotations: metadata.annotations.take(),
        };
        if marks.labels.is_none() && marks.annotations.is_none() {
            return PackedMarks(None);
        }
        // Maps of strings always serialize.
        PackedMarks(
            serde_json::to_string(&marks)
                .ok()
                .map(String::into_boxed_str),
        )
    }

    /// `metadata` with the labels and annotations put back.
    fn restore(&self, metadata: &ObjectMeta) -> Result<ObjectMeta, serde_json::Error> {
        let mut metadata = metadata.clone();
        if let Some(packed) = &self.0 {
            let marks: Marks = serde_json::from_str(packed)?;
            metadata.labels = marks.labels;
            metadata.annotations = marks.annotations;
        }
        Ok(metadata)
    }
}

/// A spec packed by [`PackedJson`], decoded.
fn unpack_spec<T: DeserializeOwned>(
    spec: &Option<PackedJson>,
) -> Result<Option<T>, serde_json::Error> {
    spec.as_ref()
        .map(|packed| serde_json::from_str(&packed.0))
        .transpose()
}

/// A cached object whose parts are packed until a reconcile reads it whole.
pub trait Packed {
    type Whole;
    /// The whole object; fails only when a packed part is not the kind's.
    fn unpack(&self) -> Result<Self::Whole, serde_json::Error>;
}

/// A Deployment as the watch cache holds it: metadata but labels and annotations, and the status
/// decoded (watch events are compared by them); the spec, labels and annotations packed until a
/// reconcile unpacks them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedDeployment {
    pub metadata: ObjectMeta,
    pub marks: PackedMarks,
    spec: Option<PackedJson>,
    pub status: Option<DeploymentStatus>,
}

impl Packed for PackedDeployment {
    type Whole = Deployment;
    fn unpack(&self) -> Result<Deployment, serde_json::Error> {
        Ok(Deployment {
            metadata: self.marks.restore(&self.metadata)?,
            spec: unpack_spec(&self.spec)?,
            status: self.status.clone(),
        })
    }
}

resource_with_own_metadata!(PackedDeployment, Deployment);

impl Lean for PackedDeployment {
    type Spec = PackedJson;
    type Status = DeploymentStatus;
    fn assemble(
        mut metadata: ObjectMeta,
        spec: Option<PackedJson>,
        status: Option<DeploymentStatus>,
    ) -> Result<Self, Missing> {
        Ok(PackedDeployment {
            marks: PackedMarks::take(&mut metadata),
            metadata,
            spec,
            status,
        })
    }

    fn known_spec(metadata: &WireMeta) -> Option<PackedJson> {
        KnownSpecs::get(metadata)
    }

    fn remember_spec(metadata: &WireMeta, spec: &PackedJson) {
        KnownSpecs::remember(metadata, spec);
    }
}

/// A budget as the watch cache holds it: the controller compares its spec, labels and
/// annotations once per reconcile, packed until then, and never reads its status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedBudget {
    pub metadata: ObjectMeta,
    pub marks: PackedMarks,
    spec: Option<PackedJson>,
}

impl Packed for PackedBudget {
    type Whole = PodDisruptionBudget;
    fn unpack(&self) -> Result<PodDisruptionBudget, serde_json::Error> {
        Ok(PodDisruptionBudget {
            metadata: self.marks.restore(&self.metadata)?,
            spec: unpack_spec(&self.spec)?,
            status: None,
        })
    }
}

resource_with_own_metadata!(PackedBudget, PodDisruptionBudget);

impl Lean for PackedBudget {
    type Spec = PackedJson;
    type Status = IgnoredAny;
    fn assemble(
        mut metadata: ObjectMeta,
        spec: Option<PackedJson>,
        _: Option<IgnoredAny>,
    ) -> Result<Self, Missing> {
        Ok(PackedBudget {
            marks: PackedMarks::take(&mut metadata),
            metadata,
            spec,
        })
    }

    // The disruption controller rewrites a budget's status whenever its pods change: those
    // events take the spec held.
    fn known_spec(metadata: &WireMeta) -> Option<PackedJson> {
        KnownSpecs::get(metadata)
    }

    fn remember_spec(metadata: &WireMeta, spec: &PackedJson) {
        KnownSpecs::remember(metadata, spec);
    }
}

/// Metadata only: what the controller reads of the answer to its own status write.
impl<K> Lean for PartialObjectMeta<K> {
    type Spec = IgnoredAny;
    type Status = IgnoredAny;
    fn assemble(
        metadata: ObjectMeta,
        _: Option<IgnoredAny>,
        _: Option<IgnoredAny>,
    ) -> Result<Self, Missing> {
        Ok(PartialObjectMeta {
            types: None,
            metadata,
            _phantom: PhantomData,
        })
    }
}

/// The answer to a status write as the controller reads it: the version the write produced and
/// who manages which part, without the field sets (most of the answer; they are read only when an
/// earlier version's entries are handed over).
#[derive(Clone, Debug, Default)]
pub struct StatusAnswer {
    pub metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct AnswerWire {
    metadata: AnswerMetaWire,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerMetaWire {
    resource_version: Option<String>,
    managed_fields: Option<Vec<ManagerWire>>,
}

#[derive(Deserialize)]
struct ManagerWire {
    manager: Option<String>,
    operation: Option<String>,
    subresource: Option<String>,
}

impl<'de> Deserialize<'de> for StatusAnswer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let AnswerWire { metadata } = AnswerWire::deserialize(deserializer)?;
        let managed_fields = metadata.managed_fields.map(|entries| {
            entries
                .into_iter()
                .map(|entry| ManagedFieldsEntry {
                    manager: entry.manager,
                    operation: entry.operation,
                    subresource: entry.subresource,
                    ..ManagedFieldsEntry::default()
                })
                .collect()
        });
        Ok(StatusAnswer {
            metadata: ObjectMeta {
                resource_version: metadata.resource_version,
                managed_fields,
                ..ObjectMeta::default()
            },
        })
    }
}

resource_with_own_metadata!(StatusAnswer, WorkerPool);

impl Lean for WorkerPool {
    type Spec = WorkerPoolSpec;
    type Status = WorkerPoolStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<WorkerPoolSpec>,
        status: Option<WorkerPoolStatus>,
    ) -> Result<Self, Missing> {
        let Some(spec) = spec else {
            return Err(Missing {
                metadata: Box::new(metadata),
                field: "spec",
            });
        };
        Ok(WorkerPool {
            metadata,
            spec,
            status,
        })
    }
}

/// A pool as the watch cache holds it: the metadata and status decoded, the spec checked against
/// its type and kept as compact JSON (a typed pod template takes about three times the heap of
/// its JSON); a reconcile unpacks the pool it reads, once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedPool {
    pub metadata: ObjectMeta,
    spec: PackedJson,
    pub status: Option<WorkerPoolStatus>,
}

impl PackedPool {
    pub fn pack(pool: &WorkerPool) -> Result<Self, serde_json::Error> {
        Ok(PackedPool {
            metadata: pool.metadata.clone(),
            spec: PackedJson::of(&pool.spec)?,
            status: pool.status.clone(),
        })
    }

    /// The whole pool; fails only when its packed spec no longer reads as a pool's.
    pub fn unpack(&self) -> Result<WorkerPool, serde_json::Error> {
        Ok(WorkerPool {
            metadata: self.metadata.clone(),
            spec: serde_json::from_str(&self.spec.0)?,
            status: self.status.clone(),
        })
    }
}

resource_with_own_metadata!(PackedPool, WorkerPool);

/// A part decoded as `T`, which checks it, and kept packed.
pub struct Checked<T>(PackedJson, PhantomData<T>);

impl<'de, T: DeserializeOwned + serde::Serialize> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let typed = T::deserialize(deserializer)?;
        PackedJson::of(&typed)
            .map(|packed| Checked(packed, PhantomData))
            .map_err(serde::de::Error::custom)
    }
}

impl Lean for PackedPool {
    type Spec = Checked<WorkerPoolSpec>;
    type Status = WorkerPoolStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Checked<WorkerPoolSpec>>,
        status: Option<WorkerPoolStatus>,
    ) -> Result<Self, Missing> {
        let Some(Checked(spec, _)) = spec else {
            return Err(Missing {
                metadata: Box::new(metadata),
                field: "spec",
            });
        };
        Ok(PackedPool {
            metadata,
            spec,
            status,
        })
    }

    fn known_spec(metadata: &WireMeta) -> Option<Checked<WorkerPoolSpec>> {
        KnownSpecs::get(metadata).map(|packed| Checked(packed, PhantomData))
    }

    fn remember_spec(metadata: &WireMeta, spec: &Checked<WorkerPoolSpec>) {
        KnownSpecs::remember(metadata, &spec.0);
    }
}

/// `ObjectMeta` without `managedFields`; unknown keys are skipped without allocating.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    uid: Option<String>,
}

impl From<WireMeta> for ObjectMeta {
    fn from(wire: WireMeta) -> Self {
        let annotations = wire.annotations.map(|mut annotations| {
            annotations.remove(LAST_APPLIED);
            annotations
        });
        ObjectMeta {
            annotations,
            creation_timestamp: wire.creation_timestamp,
            deletion_grace_period_seconds: wire.deletion_grace_period_seconds,
            deletion_timestamp: wire.deletion_timestamp,
            finalizers: wire.finalizers,
            generate_name: wire.generate_name,
            generation: wire.generation,
            labels: wire.labels,
            managed_fields: None,
            name: wire.name,
            namespace: wire.namespace,
            owner_references: wire.owner_references,
            resource_version: wire.resource_version,
            self_link: None,
            uid: wire.uid,
        }
    }
}

/// A spec as an object's decode found it: one held already ([`Lean::known_spec`]), or the
/// event's own.
enum SpecWire<S, F> {
    Known(S),
    Fresh(F),
}

/// An object's parts: the metadata decoded; the spec held already or read as `F`; the status
/// read as `T`.
struct Parts<S, F, T> {
    metadata: WireMeta,
    spec: Option<SpecWire<S, F>>,
    status: Option<T>,
}

/// The top-level keys of an object.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Part {
    Metadata,
    Spec,
    Status,
    #[serde(other)]
    Other,
}

/// Decodes an object into its [`Parts`]; a spec [`Lean::known_spec`] holds (the metadata comes
/// first in what the API server sends) is skipped, not parsed.
struct PartsVisitor<K, F, T>(PhantomData<(K, F, T)>);

impl<K, F, T> PartsVisitor<K, F, T> {
    fn new() -> Self {
        PartsVisitor(PhantomData)
    }
}

impl<'de, K: Lean, F: DeserializeOwned, T: DeserializeOwned> serde::de::Visitor<'de>
    for PartsVisitor<K, F, T>
{
    type Value = Parts<K::Spec, F, T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut metadata, mut spec, mut status) = (None::<WireMeta>, None, None);
        while let Some(part) = map.next_key::<Part>()? {
            match part {
                Part::Metadata => metadata = Some(map.next_value()?),
                Part::Spec => match metadata.as_ref().and_then(K::known_spec) {
                    Some(known) => {
                        map.next_value::<IgnoredAny>()?;
                        spec = Some(SpecWire::Known(known));
                    }
                    None => spec = map.next_value::<Option<F>>()?.map(SpecWire::Fresh),
                },
                Part::Status => status = map.next_value()?,
                Part::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let metadata = metadata.ok_or_else(|| serde::de::Error::missing_field("metadata"))?;
        Ok(Parts {
            metadata,
            spec,
            status,
        })
    }
}

impl<'de, K: Lean> Deserialize<'de> for Watched<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parts = deserializer.deserialize_map(PartsVisitor::<K, K::Spec, K::Status>::new())?;
        let spec = parts.spec.map(|spec| match spec {
            SpecWire::Known(known) => known,
            SpecWire::Fresh(fresh) => {
                K::remember_spec(&parts.metadata, &fresh);
                fresh
            }
        });
        K::assemble(parts.metadata.into(), spec, parts.status)
            .map(|object| Watched(Box::new(object)))
            .map_err(|missing| serde::de::Error::missing_field(missing.field))
    }
}

/// A watched object that may not match its schema: the object, or its metadata and what does
/// not decode, so the controller can say so on the object instead of losing it from the watch.
/// Only the spec and status are held as JSON values until they decode; the metadata decodes
/// once, without its managed fields.
/// The object is boxed, as in [`Watched`].
#[derive(Clone, Debug)]
pub struct Guarded<K>(pub Result<Box<K>, InvalidObject>);

/// One part decoded from its JSON; the error names the field path within the object.
fn part<T: DeserializeOwned>(name: &str, value: Option<Value>) -> Result<Option<T>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    // Tracking the path costs as much as the decoding, so it is done only to explain a failure.
    if let Ok(decoded) = T::deserialize(&value) {
        return Ok(Some(decoded));
    }
    serde_path_to_error::deserialize(value)
        .map(Some)
        .map_err(|error| match error.path().to_string().as_str() {
            "." => format!("{name}: {}", error.inner()),
            path => format!("{name}.{path}: {}", error.inner()),
        })
}

impl<'de, K: Lean> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = deserializer.deserialize_map(PartsVisitor::<K, Value, Value>::new())?;
        let spec = match wire.spec {
            Some(SpecWire::Known(known)) => Ok(Some(known)),
            Some(SpecWire::Fresh(json)) => part::<K::Spec>("spec", Some(json)).inspect(|spec| {
                if let Some(spec) = spec {
                    K::remember_spec(&wire.metadata, spec);
                }
            }),
            None => Ok(None),
        };
        let metadata = ObjectMeta::from(wire.metadata);
        let parts = spec
            .and_then(|spec| part::<K::Status>("status", wire.status).map(|status| (spec, status)));
        Ok(Guarded(match parts {
            Ok((spec, status)) => {
                K::assemble(metadata, spec, status)
                    .map(Box::new)
                    .map_err(|missing| InvalidObject {
                        error: format!("missing field `{}`", missing.field),
                        metadata: *missing.metadata,
                    })
            }
            Err(error) => Err(InvalidObject { error, metadata }),
        }))
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Guarded<K> {
    resource_named_as!(K);

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.meta(),
            Err(invalid) => &invalid.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.meta_mut(),
            Err(invalid) => &mut invalid.metadata,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Watched<K> {
    resource_named_as!(K);

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

impl<K> Deref for Watched<K> {
    type Target = K;
    fn deref(&self) -> &K {
        &self.0
    }
}

impl<K> Borrow<K> for Watched<K> {
    fn borrow(&self) -> &K {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn managed_fields() -> serde_json::Value {
        json!([{
            "manager": "workerpool-operator",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}},
        }])
    }

    fn object(
        kind: &str,
        api_version: &str,
        spec: serde_json::Value,
        status: serde_json::Value,
    ) -> serde_json::Value {
        json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "name": "api",
                "namespace": "shop",
                "uid": "u-1",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "workerpool-operator"},
                "annotations": {LAST_APPLIED: "{\"huge\": true}", "workerpool.dev/revision": "abc"},
                "ownerReferences": [{
                    "apiVersion": "workerpool.dev/v1alpha1",
                    "kind": "WorkerPool",
                    "name": "api",
                    "uid": "pool-uid",
                    "controller": true,
                }],
                "finalizers": ["example.com/hold"],
                "managedFields": managed_fields(),
            },
            "spec": spec,
            "status": status,
        })
    }

    /// The full decode with what [`Watched`] leaves out removed by hand.
    fn expected<K: DeserializeOwned + Resource>(value: &serde_json::Value) -> K {
        let mut full: K = serde_json::from_value(value.clone()).expect("full decode");
        let meta = full.meta_mut();
        meta.managed_fields = None;
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
        full
    }

    #[test]
    fn a_deployment_keeps_spec_and_status_and_drops_managed_fields() {
        let value = object(
            "Deployment",
            "apps/v1",
            json!({
                "replicas": 4,
                "selector": {"matchLabels": {"workerpool.dev/pool": "api"}},
                "template": {"metadata": {"labels": {"workerpool.dev/pool": "api"}},
                             "spec": {"containers": [{"name": "app", "image": "shop:1"}]}},
            }),
            json!({"replicas": 4, "readyReplicas": 2, "observedGeneration": 3,
                   "conditions": [{"type": "Available", "status": "False"}]}),
        );
        let watched: Watched<Deployment> =
            serde_json::from_str(&value.to_string()).expect("watched decode");
        assert_eq!(*watched.0, expected::<Deployment>(&value));
        assert!(watched.metadata.managed_fields.is_none());
        assert_eq!(
            watched.metadata.annotations.as_ref().map(|a| a.len()),
            Some(1),
            "only the last-applied annotation is dropped"
        );
        assert_eq!(
            watched.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn a_budget_keeps_its_spec_and_skips_its_status() {
        let value = object(
            "PodDisruptionBudget",
            "policy/v1",
            json!({"maxUnavailable": 1, "selector": {"matchLabels": {"workerpool.dev/pool": "api"}}}),
            json!({"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1, "expectedPods": 4}),
        );
        let watched: Watched<PackedBudget> =
            serde_json::from_str(&value.to_string()).expect("watched decode");
        let mut full = expected::<PodDisruptionBudget>(&value);
        full.status = None;
        assert_eq!(watched.unpack().expect("unpack"), full);
        assert!(
            watched.metadata.labels.is_none() && watched.metadata.annotations.is_none(),
            "labels and annotations are packed until a reconcile reads them"
        );
    }

    #[test]
    fn a_job_keeps_its_conditions() {
        let value = object(
            "Job",
            "batch/v1",
            json!({"template": {"spec": {"containers": [{"name": "migrate", "image": "shop:1"}]}}}),
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
        );
        let watched: Watched<Job> =
            serde_json::from_str(&value.to_string()).expect("watched decode");
        assert_eq!(*watched.0, expected::<Job>(&value));
    }

    #[test]
    fn a_pod_decodes_straight_into_its_view() {
        let value = object(
            "Pod",
            "v1",
            json!({"containers": [{"name": "app", "image": "shop:1"}]}),
            json!({"phase": "Running", "containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 2, "image": "shop:1", "imageID": "",
                "state": {"running": {"startedAt": "2026-01-01T00:01:00Z"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}},
            }]}),
        );
        let watched: ViewedPod = serde_json::from_str(&value.to_string()).expect("viewed pod");
        let full: Pod = serde_json::from_value(value).expect("pod");
        assert_eq!(watched.view, PodView::from(&full));
        assert_eq!(
            watched.meta().resource_version,
            full.metadata.resource_version
        );
        assert_eq!(watched.meta().name.as_deref(), Some("api"));
        assert_eq!(watched.meta().namespace.as_deref(), Some("shop"));
        assert_eq!(ViewedPod::plural(&()), "pods");
        assert_eq!(ViewedPod::api_version(&()), "v1");
    }

    #[test]
    fn metadata_only_skips_spec_and_status() {
        let value = object(
            "Deployment",
            "apps/v1",
            json!({"replicas": 1}),
            json!({"replicas": 1}),
        );
        let watched: Watched<PartialObjectMeta<Deployment>> =
            serde_json::from_str(&value.to_string()).expect("metadata only");
        assert_eq!(watched.metadata, expected::<Deployment>(&value).metadata);
        assert_eq!(
            Watched::<PartialObjectMeta<Deployment>>::plural(&()),
            "deployments"
        );
    }

    fn pool(spec: serde_json::Value) -> serde_json::Value {
        let mut pool = object(
            "WorkerPool",
            "workerpool.dev/v1alpha1",
            spec,
            json!({"readyReplicas": 2, "phase": "Progressing"}),
        );
        if pool["spec"].is_null() {
            pool.as_object_mut().map(|p| p.remove("spec"));
        }
        pool
    }

    fn valid_spec() -> serde_json::Value {
        json!({"runtime": "gunicorn", "replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "shop:1"}]}}})
    }

    #[test]
    fn a_valid_pool_decodes_without_managed_fields() {
        let value = pool(valid_spec());
        let guarded: Guarded<WorkerPool> =
            serde_json::from_str(&value.to_string()).expect("guarded");
        let decoded = guarded.0.expect("valid");
        assert_eq!(decoded.spec, expected::<WorkerPool>(&value).spec);
        assert_eq!(decoded.status, expected::<WorkerPool>(&value).status);
        assert_eq!(decoded.metadata, expected::<WorkerPool>(&value).metadata);
    }

    #[test]
    fn a_pool_decodes_as_written_through_escapes_and_large_numbers() {
        let mut spec = valid_spec();
        spec["template"]["spec"]["containers"][0]["env"] = json!([
            {"name": "GREETING", "value": "say \"hi\"\n\tto caf\u{e9} \u{1F40D} \\ done"},
        ]);
        spec["template"]["spec"]["activeDeadlineSeconds"] = json!(i64::MAX);
        spec["template"]["metadata"] = json!({"annotations": {"ratio": "0.1"}});
        let value = pool(spec);
        let guarded: Guarded<WorkerPool> =
            serde_json::from_str(&value.to_string()).expect("guarded");
        let decoded = guarded.0.expect("valid");
        assert_eq!(decoded.spec, expected::<WorkerPool>(&value).spec);
    }

    #[test]
    fn an_invalid_pool_keeps_its_metadata_and_names_the_field() {
        let mut spec = valid_spec();
        spec["replicas"] = json!("many");
        let guarded: Guarded<PackedPool> =
            serde_json::from_str(&pool(spec).to_string()).expect("decodes as invalid");
        let invalid = guarded.0.expect_err("invalid");
        assert_eq!(invalid.metadata.name.as_deref(), Some("api"));
        assert_eq!(invalid.metadata.uid.as_deref(), Some("u-1"));
        assert!(
            invalid.error.starts_with("spec.replicas: invalid type"),
            "{}",
            invalid.error
        );
        assert_eq!(Guarded::<PackedPool>::kind(&()), "WorkerPool");
        assert_eq!(
            invalid_error(&pool(serde_json::Value::Null)),
            Some("missing field `spec`".into())
        );
    }

    fn invalid_error(value: &serde_json::Value) -> Option<String> {
        let guarded: Guarded<PackedPool> = serde_json::from_str(&value.to_string()).ok()?;
        guarded.0.err().map(|invalid| invalid.error)
    }

    #[test]
    fn watch_events_decode_whichever_key_comes_first() {
        use kube::api::WatchEvent;
        let object = pool(valid_spec()).to_string();
        for line in [
            format!(r#"{{"type":"MODIFIED","object":{object}}}"#),
            format!(r#"{{"object":{object},"type":"MODIFIED"}}"#),
        ] {
            let event: WatchEvent<Guarded<WorkerPool>> =
                serde_json::from_str(&line).expect("pool event");
            assert!(
                matches!(event, WatchEvent::Modified(Guarded(Ok(_)))),
                "{line}"
            );
            let event: WatchEvent<Watched<PartialObjectMeta<WorkerPool>>> =
                serde_json::from_str(&line).expect("metadata event");
            assert!(matches!(event, WatchEvent::Modified(_)), "{line}");
        }
    }

    #[test]
    fn a_packed_pool_unpacks_to_what_the_lean_decode_reads() {
        use kube::api::WatchEvent;
        let mut spec = valid_spec();
        spec["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "GREETING", "value": "say \"hi\"\n to caf\u{e9}"}]);
        spec["template"]["spec"]["activeDeadlineSeconds"] = json!(i64::MAX);
        spec["policy"] = json!({"boot": {"timeoutSeconds": 90, "maxConcurrent": 2}});
        let mut value = pool(spec);
        value["status"]["conditions"] = json!([{
            "type": "Ready", "status": "True", "reason": "AllReady", "message": "3 of 3 ready",
            "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1,
        }]);
        let text = value.to_string();
        let lean = serde_json::from_str::<Guarded<WorkerPool>>(&text)
            .expect("lean decode")
            .0
            .expect("valid");
        assert!(lean.status.is_some());
        for line in [
            format!(r#"{{"type":"MODIFIED","object":{text}}}"#),
            format!(r#"{{"object":{text},"type":"MODIFIED"}}"#),
        ] {
            let event: WatchEvent<Guarded<PackedPool>> =
                serde_json::from_str(&line).expect("packed event");
            let WatchEvent::Modified(Guarded(Ok(packed))) = event else {
                panic!("not a valid modification: {line}");
            };
            assert_eq!(packed.unpack().expect("unpack"), *lean);
            assert_eq!(packed.metadata, lean.metadata);
        }
        let packed = PackedPool::pack(&lean).expect("pack");
        assert_eq!(packed.unpack().expect("unpack"), *lean, "pack and unpack");
    }

    #[test]
    fn a_packed_deployment_unpacks_to_what_the_lean_decode_reads() {
        use kube::api::WatchEvent;
        let value = object(
            "Deployment",
            "apps/v1",
            json!({
                "replicas": 4,
                "paused": true,
                "selector": {"matchLabels": {"workerpool.dev/pool": "api"}},
                "template": {"metadata": {"labels": {"workerpool.dev/pool": "api"}},
                             "spec": {"containers": [{"name": "app", "image": "shop:1",
                                                      "resources": {"limits": {"memory": "1Gi"}}}]}},
            }),
            json!({"replicas": 4, "readyReplicas": 2, "observedGeneration": 3}),
        );
        let text = value.to_string();
        let packed: Watched<PackedDeployment> = serde_json::from_str(&text).expect("packed decode");
        let lean: Watched<Deployment> = serde_json::from_str(&text).expect("lean decode");
        assert_eq!(packed.unpack().expect("unpack"), *lean.0);
        assert_eq!(packed.status, lean.status);
        // Decoded through a watch event in either key order (a buffered `object` included).
        for line in [
            format!(r#"{{"type":"MODIFIED","object":{text}}}"#),
            format!(r#"{{"object":{text},"type":"MODIFIED"}}"#),
        ] {
            let event: WatchEvent<Watched<PackedDeployment>> =
                serde_json::from_str(&line).expect("packed event");
            let WatchEvent::Modified(decoded) = event else {
                panic!("not a modification: {line}");
            };
            assert_eq!(decoded.unpack().expect("unpack"), *lean.0);
        }
    }

    /// A Deployment event of `uid` at `generation` whose spec asks for `replicas`; the metadata
    /// first (as the API server sends it) unless `spec_first`.
    fn deployment_event(uid: &str, generation: i64, replicas: i32, spec_first: bool) -> String {
        let metadata =
            json!({"name": "api", "namespace": "shop", "uid": uid, "generation": generation});
        let spec = json!({"replicas": replicas, "selector": {}, "template": {}});
        let object = if spec_first {
            format!(r#"{{"spec":{spec},"metadata":{metadata},"status":{{"replicas":1}}}}"#)
        } else {
            format!(r#"{{"metadata":{metadata},"spec":{spec},"status":{{"replicas":1}}}}"#)
        };
        format!(r#"{{"type":"MODIFIED","object":{object}}}"#)
    }

    fn replicas_of(line: &str) -> (Watched<PackedDeployment>, Option<i32>) {
        use kube::api::WatchEvent;
        let Ok(WatchEvent::Modified(deployment)) =
            serde_json::from_str::<WatchEvent<Watched<PackedDeployment>>>(line)
        else {
            panic!("not a modification: {line}");
        };
        let replicas = deployment
            .unpack()
            .expect("unpack")
            .spec
            .and_then(|spec| spec.replicas);
        (deployment, replicas)
    }

    #[test]
    fn an_event_of_a_generation_held_takes_the_held_spec_instead_of_parsing_its_own() {
        let uid = "u-known-spec";
        let (held, replicas) = replicas_of(&deployment_event(uid, 2, 4, false));
        assert_eq!(replicas, Some(4));
        // The same generation cannot carry another spec; had it been parsed, it would read 9.
        let (_, replicas) = replicas_of(&deployment_event(uid, 2, 9, false));
        assert_eq!(replicas, Some(4), "the spec held is taken");
        let (_, replicas) = replicas_of(&deployment_event(uid, 3, 9, false));
        assert_eq!(replicas, Some(9), "a new generation is parsed");
        let (_, replicas) = replicas_of(&deployment_event(uid, 2, 9, true));
        assert_eq!(
            replicas,
            Some(9),
            "a spec before its metadata cannot be known, and is parsed"
        );
        drop(held);
        let (_, replicas) = replicas_of(&deployment_event(uid, 2, 9, false));
        assert_eq!(replicas, Some(9), "a spec no cache holds is parsed again");
    }

    #[test]
    fn a_pool_event_of_a_generation_held_takes_the_held_spec_and_a_new_one_is_checked() {
        let uid = "u-known-pool";
        let event = |generation: i64, spec: serde_json::Value| {
            let mut value = pool(spec);
            value["metadata"]["uid"] = json!(uid);
            value["metadata"]["generation"] = json!(generation);
            serde_json::from_str::<Guarded<PackedPool>>(&value.to_string()).expect("decodes")
        };
        let mut other = valid_spec();
        other["replicas"] = json!(7);
        let held = event(4, valid_spec());
        let replicas = |guarded: &Guarded<PackedPool>| {
            guarded
                .0
                .as_ref()
                .map(|pool| pool.unpack().expect("unpack").spec.replicas)
                .map_err(|invalid| invalid.error.clone())
        };
        assert_eq!(replicas(&held), Ok(3));
        assert_eq!(replicas(&event(4, other.clone())), Ok(3), "the spec held");
        assert_eq!(replicas(&event(5, other)), Ok(7), "a new generation");
        let mut invalid = valid_spec();
        invalid["replicas"] = json!("many");
        let error = replicas(&event(6, invalid)).expect_err("a new spec is checked");
        assert!(error.starts_with("spec.replicas: invalid type"), "{error}");
    }

    #[test]
    fn a_packed_spec_that_is_not_a_deployments_fails_to_unpack_not_to_decode() {
        let value = object(
            "Deployment",
            "apps/v1",
            json!({"replicas": "four"}),
            json!({}),
        );
        let packed: Watched<PackedDeployment> =
            serde_json::from_str(&value.to_string()).expect("packed decode");
        assert!(packed.unpack().is_err());
    }

    #[test]
    fn the_answer_to_a_status_write_is_read_without_its_field_sets() {
        let mut answer = pool(valid_spec());
        answer["metadata"]["managedFields"] = json!([
            {"manager": "workerpool-operator-status", "operation": "Apply", "subresource": "status",
             "apiVersion": "workerpool.dev/v1alpha1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:status": {"f:readyReplicas": {}}}},
            {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {}}},
        ]);
        let read: StatusAnswer = serde_json::from_value(answer).expect("answer");
        assert_eq!(read.metadata.resource_version.as_deref(), Some("42"));
        let entries = read.metadata.managed_fields.expect("managed fields");
        let who: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.manager.as_deref(),
                    e.operation.as_deref(),
                    e.subresource.as_deref(),
                    e.fields_v1.is_some(),
                )
            })
            .collect();
        assert_eq!(
            who,
            [
                (
                    Some("workerpool-operator-status"),
                    Some("Apply"),
                    Some("status"),
                    false
                ),
                (Some("kubectl"), Some("Update"), None, false),
            ]
        );
    }

    #[test]
    fn a_missing_metadata_is_an_error_not_a_panic() {
        let decoded = serde_json::from_str::<Watched<Deployment>>(r#"{"spec": {}}"#);
        assert!(decoded.is_err());
    }
}

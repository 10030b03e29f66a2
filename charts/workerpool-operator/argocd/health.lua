-- Argo CD health check for workerpool.dev/WorkerPool.
-- Install under resource.customizations.health.workerpool.dev_WorkerPool in argocd-cm.
local hs = {}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  if c ~= nil and c.reason ~= nil then
    return c.reason
  end
  return fallback
end

local status = obj.status
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

-- A pool the operator has not seen yet, or not since its last change, is not healthy yet.
if status == nil or status.observedGeneration == nil or status.observedGeneration < 0
    or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end

local stalled = condition(status, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

if obj.spec ~= nil and obj.spec.replicas == 0 then
  hs.status = "Suspended"
  hs.message = "Scaled to zero replicas"
  return hs
end

-- Pods that keep crashing: the pool is in no state to serve, whatever else is in progress.
local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "False" and ready.reason == "CrashLooping" then
  hs.status = "Degraded"
  hs.message = describe(ready, "CrashLooping")
  return hs
end

local reconciling = condition(status, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

local degraded = condition(status, "Degraded")
if is_true(ready) then
  hs.status = "Healthy"
  if is_true(degraded) then
    hs.message = "Serving; recent worker aborts: " .. describe(degraded, "Degraded")
  else
    hs.message = describe(ready, "Ready")
  end
  return hs
end

if is_true(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the pool to become Ready")
return hs

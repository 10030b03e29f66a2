-- Runs charts/workerpool-operator/argocd/health.lua against sample WorkerPools, as Argo CD does:
-- the script sees the object as the global `obj` and returns {status, message}.
-- Usage: lua5.1 tests/argocd/health_test.lua charts/workerpool-operator/argocd/health.lua
local script_path = arg[1]
local chunk = assert(loadfile(script_path))

local function pool(generation, replicas, status)
  return {
    apiVersion = "workerpool.dev/v1alpha1",
    kind = "WorkerPool",
    metadata = { name = "api", namespace = "shop", generation = generation },
    spec = { replicas = replicas, runtime = "gunicorn" },
    status = status,
  }
end

local function conditions(generation, list)
  local out = {}
  for _, c in ipairs(list) do
    table.insert(out, {
      type = c[1], status = c[2], reason = c[3], message = c[4] or "",
      observedGeneration = generation,
    })
  end
  return out
end

local cases = {
  {
    name = "no status yet",
    obj = pool(1, 3, nil),
    status = "Progressing",
  },
  {
    name = "status defaulted by the schema, not observed",
    obj = pool(1, 3, { observedGeneration = -1 }),
    status = "Progressing",
  },
  {
    name = "observed an older generation",
    obj = pool(4, 3, { observedGeneration = 3, conditions = conditions(3, {
      { "Ready", "True", "AllReplicasReady", "3 of 3 replicas ready" },
    }) }),
    status = "Progressing",
  },
  {
    name = "ramping",
    obj = pool(2, 12, { observedGeneration = 2, conditions = conditions(2, {
      { "Ready", "False", "Ramping", "ramping up: 3 of 12 replicas ready, target 6" },
      { "Reconciling", "True", "Ramping", "ramping up: 3 of 12 replicas ready, target 6" },
      { "Stalled", "False", "Progressing" },
    }) }),
    status = "Progressing",
    message = "Ramping: ramping up: 3 of 12 replicas ready, target 6",
  },
  {
    name = "ready",
    obj = pool(2, 3, { observedGeneration = 2, conditions = conditions(2, {
      { "Ready", "True", "AllReplicasReady", "3 of 3 replicas ready" },
      { "Reconciling", "False", "Converged" },
      { "Stalled", "False", "Progressing" },
      { "Degraded", "False", "NoRecentAborts" },
    }) }),
    status = "Healthy",
  },
  {
    name = "ready with recent aborts",
    obj = pool(2, 3, { observedGeneration = 2, conditions = conditions(2, {
      { "Ready", "True", "AllReplicasReady", "3 of 3 replicas ready" },
      { "Reconciling", "False", "Converged" },
      { "Stalled", "False", "Progressing" },
      { "Degraded", "True", "OOMKilled", "1 aborts in the last 600s (1 OOMKilled)" },
    }) }),
    status = "Healthy",
    message = "Serving; recent worker aborts: OOMKilled: 1 aborts in the last 600s (1 OOMKilled)",
  },
  {
    name = "circuit open",
    obj = pool(2, 6, { observedGeneration = 2, conditions = conditions(2, {
      { "Ready", "False", "BootFailureThreshold", "3 boot failures of revision ab12cd34ef" },
      { "Reconciling", "False", "BootFailureThreshold", "3 boot failures of revision ab12cd34ef" },
      { "Stalled", "True", "BootFailureThreshold", "3 boot failures of revision ab12cd34ef" },
      { "Degraded", "True", "BootFailed", "3 aborts" },
    }) }),
    status = "Degraded",
    message = "BootFailureThreshold: 3 boot failures of revision ab12cd34ef",
  },
  {
    name = "init failed",
    obj = pool(5, 6, { observedGeneration = 5, conditions = conditions(5, {
      { "Stalled", "True", "InitFailed", "init Job api-init-x-g5 failed" },
    }) }),
    status = "Degraded",
  },
  {
    name = "scaled to zero",
    obj = pool(3, 0, { observedGeneration = 3, conditions = conditions(3, {
      { "Ready", "True", "AllReplicasReady", "0 of 0 replicas ready" },
      { "Stalled", "False", "Progressing" },
    }) }),
    status = "Suspended",
  },
  {
    name = "pods that keep crashing, between two crashes all ready",
    obj = pool(2, 3, { observedGeneration = 2, conditions = conditions(2, {
      { "Ready", "False", "CrashLooping", "3 pods keep crashing" },
      { "Reconciling", "True", "CrashLooping", "3 pods keep crashing" },
      { "Stalled", "False", "Progressing" },
      { "Degraded", "True", "UnexpectedExit", "9 aborts" },
    }) }),
    status = "Degraded",
    message = "CrashLooping: 3 pods keep crashing",
  },
  {
    name = "not ready, not progressing: pods failing",
    obj = pool(2, 3, { observedGeneration = 2, conditions = conditions(2, {
      { "Ready", "False", "Progressing", "1 of 3 replicas ready" },
      { "Reconciling", "False", "Converged" },
      { "Stalled", "False", "Progressing" },
      { "Degraded", "True", "CrashLoop", "4 aborts" },
    }) }),
    status = "Degraded",
  },
}

local failures = 0
for _, case in ipairs(cases) do
  obj = case.obj
  local ok, hs = pcall(chunk)
  if not ok then
    print("FAIL " .. case.name .. ": error " .. tostring(hs))
    failures = failures + 1
  elseif hs.status ~= case.status then
    print("FAIL " .. case.name .. ": status " .. tostring(hs.status) .. ", want " .. case.status)
    failures = failures + 1
  elseif case.message ~= nil and hs.message ~= case.message then
    print("FAIL " .. case.name .. ": message " .. tostring(hs.message) .. ", want " .. case.message)
    failures = failures + 1
  else
    print("ok   " .. case.name .. ": " .. hs.status)
  end
end
if failures > 0 then
  os.exit(1)
end
print(#cases .. " cases passed")

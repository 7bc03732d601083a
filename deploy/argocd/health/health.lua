-- ArgoCD health of a NodeGroupMesh: resource.customizations.health.sgmesh.io_NodeGroupMesh.
--
-- Healthy:     Ready=True for the object's current generation.
-- Degraded:    Ready=False; the message is the operator's (what to fix, or what failed).
-- Progressing: no status yet, or a status written for an older generation, or no verdict.
--
-- Lua 5.1, as ArgoCD embeds it: `obj` is the object, the script returns {status, message}.
local health = {}
local status = obj.status
local generation = obj.metadata.generation

if status == nil or status.observedGeneration == nil then
  health.status = "Progressing"
  health.message = "Waiting for the sgmesh operator to reconcile the mesh"
  return health
end

if generation ~= nil and status.observedGeneration < generation then
  health.status = "Progressing"
  health.message = "Waiting for the sgmesh operator to reconcile generation " .. generation
  return health
end

local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

if ready == nil then
  health.status = "Progressing"
  health.message = "The mesh has no Ready condition yet"
  return health
end

local message = ready.message
if message == nil or message == "" then
  message = ready.reason or ""
end

if ready.status == "True" then
  health.status = "Healthy"
elseif ready.status == "False" then
  health.status = "Degraded"
else
  health.status = "Progressing"
end
health.message = message
return health

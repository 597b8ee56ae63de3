-- settings: the values a flow declares it can be given without editing its
-- Lua. A flow declares each setting (type, default, description); values
-- live in FLOWS_DIR/settings.json ({"flow": {"name": value}}), read at each
-- reload and validated against the declarations, and written by the admin
-- API. A run reads the values in force when it was created (ctx.settings),
-- recorded with a stored run so that its retries and wakes read them too.
local os_c = require "rill.c.os"
local json = require "rill.json"

local settings = {
  FILE = "settings.json",
  applied_text = nil, -- the file's text the last apply read (nil: there was none)
  current = {},   -- flow name -> the values from the file in force (validated)
  isolated = nil, -- `rill test`: flow name -> the test's values (the file is not read)
}

local TYPES = { number = "number", integer = "number", string = "string", boolean = "boolean" }
local TYPE_NAMES = "number, integer, string, boolean"
local DECL_KEYS = { type = true, default = true, description = true }

-- is_object(t): a table decoded from a JSON object (string keys only).
local function is_object(t)
  if type(t) ~= "table" then return false end
  for k in pairs(t) do
    if type(k) ~= "string" then return false end
  end
  return true
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" then return is_object(v) and next(v) and "an object" or "an array" end
  return tostring(v)
end

-- check(decl, name, value) -> value, or nil and why ("expected a number, got ...").
local function check(decl, value)
  if type(value) ~= TYPES[decl.type] or (decl.type == "integer" and value % 1 ~= 0)
      or (decl.type == "number" and (value ~= value or value == math.huge or value == -math.huge)) then
    return nil, string.format("expected %s %s, got %s", decl.type == "integer" and "an" or "a", decl.type, show(value))
  end
  return value
end

-- declare(t, file, line_of) -> name -> {type, default, description}, or
-- raises "FILE:LINE: settings.NAME: ..." (line_of(name) -> the line of its
-- declaration, or nil).
function settings.declare(t, file, line_of)
  if type(t) ~= "table" then
    error(file .. ': settings: expected a table like { threshold = { type = "number", default = 10000, '
      .. 'description = "..." } }', 0)
  end
  local out = {}
  for name, d in pairs(t) do
    local at = line_of(name)
    local function bad(fmt, ...)
      error(string.format("%s%s: settings.%s: " .. fmt, file, at and (":" .. at) or "", tostring(name), ...), 0)
    end
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then bad("a setting's name is a word") end
    if type(d) ~= "table" then bad('expected { type = "number", default = ..., description = "..." }') end
    for k in pairs(d) do
      if not DECL_KEYS[k] then bad("unknown option %s (type, default, description)", show(k)) end
    end
    if not TYPES[d.type] then bad("type %s is not one of %s", show(d.type), TYPE_NAMES) end
    if d.default == nil then bad("needs a default (a run always has a value)") end
    if not check(d, d.default) then bad("default %s is not %s %s", show(d.default),
      d.type == "integer" and "an" or "a", d.type) end
    if d.description ~= nil and type(d.description) ~= "string" then bad("description must be a string") end
    out[name] = { type = d.type, default = d.default, description = d.description }
  end
  return out
end

-- validate(flow_name, decls, values) -> a copy of values, or nil and why
-- ("NAME: expected a number, got ..."). A value of json.null is dropped
-- (back to the default).
function settings.validate(decls, values, prefix)
  prefix = prefix or ""
  if type(values) ~= "table" then return nil, prefix:gsub("%.$", "") .. ": expected an object of settings" end
  local out = {}
  for name, v in pairs(values) do
    local decl = decls[name]
    if not decl then
      local names = {}
      for n in pairs(decls) do names[#names + 1] = n end
      table.sort(names)
      local guess = require("rill.triggers").closest(name, names)
      return nil, string.format("%sno setting '%s' (%s)", prefix:gsub("%.$", ": "), tostring(name),
        guess and ("did you mean '" .. guess .. "'?") or
        ("declared: " .. (#names > 0 and table.concat(names, ", ") or "none")))
    end
    if v ~= json.null then
      local ok, why = check(decl, v)
      if ok == nil then return nil, prefix .. name .. ": " .. why end
      out[name] = v
    end
  end
  return out
end

-- read(dir) -> the settings file's table and text ({} and nil when there
-- is none), or nil, "DIR/settings.json[:LINE:COL]: why" and what failed
-- ("file": it cannot be read; "broken": its text is not a settings object).
function settings.read(dir)
  local path = dir .. "/" .. settings.FILE
  if not os_c.stat(path) then return {} end
  local text, err = os_c.read_file(path)
  if not text then return nil, path .. ": " .. tostring(err), "file" end
  local t, jerr = json.try_decode(text)
  if t == nil then
    local at, reason = json.where(text, jerr):match("^(%d+:%d+): (.*)$")
    return nil, path .. ":" .. at .. ": not JSON: " .. reason, "broken"
  end
  if not is_object(t) then
    return nil, path .. ':1:1: expected an object {"flow": {"setting": value}}', "broken"
  end
  return t, text
end

-- applied(dir, name) -> whether a change the watcher saw of file `name` in
-- dir is nothing to reload for: settings.json holding the text the last
-- apply read (the admin API's write, which it reloaded itself), or the
-- temporary file that write goes through.
function settings.applied(dir, name)
  if name == settings.FILE .. ".tmp~" then return true end
  if name ~= settings.FILE or not settings.applied_text then return false end
  return os_c.read_file(dir .. "/" .. settings.FILE) == settings.applied_text
end

-- values(flow) -> the values a run of this version reads now: the test's,
-- else the file's, over the declared defaults.
local NONE = {} -- a flow without values in the file; only read, never handed out
function settings.values(flow)
  local out = {}
  local decls = flow.settings
  if decls == nil or next(decls) == nil then return out end -- a run of each sync webhook comes here
  local set = (settings.isolated or settings.current)[flow.name] or NONE
  for name, decl in pairs(decls) do
    local v = set[name]
    if v == nil then v = decl.default end
    out[name] = v
  end
  return out
end

-- record(flow) -> the values a stored run is created with, as JSON (its
-- attempts read them, whatever changes meanwhile), or nil for a flow that
-- declares none. What queue.submit and an event's fan-out store.
function settings.record(flow)
  if not next(flow.settings or {}) then return nil end
  return json.encode(settings.values(flow))
end

-- for_run(flow, recorded) -> a run's ctx.settings: the values recorded
-- with its run (a retry, a wake), with the current ones for settings its
-- version declares that the record lacks, or records with another type (a
-- version that changed the declaration since the run was created).
-- A name the flow does not declare is a typo (nothing can set it): said at
-- the flow's line rather than read as nil, by a metatable made once per flow
-- version and shared by its runs (a table and a closure per run were a
-- tenth of what a sync webhook request allocates). Its __metatable keeps it
-- out of the runs' reach: a run that changed it would change the others'.
local typo_mt = setmetatable({}, { __mode = "k" }) -- flow version -> its runs' settings metatable
local function new_typo_mt(flow)
  -- (the name and declarations, not the flow: a value holding its weak key
  -- would keep every flow version ever loaded)
  local flow_name, decls = flow.name, flow.settings or {}
  local mt = { __metatable = false, __index = function(_, name)
    local names = {}
    for k in pairs(decls) do names[#names + 1] = k end
    table.sort(names)
    local guess = #names > 0 and require("rill.triggers").closest(tostring(name), names)
    error(tostring(flow_name) .. " declares no setting '" .. tostring(name):sub(1, 64) .. "'" ..
      (guess and (" (did you mean '" .. guess .. "'?)") or #names == 0 and " (it declares no settings)" or
       " (settings: " .. table.concat(names, ", ") .. ")"), 2)
  end }
  typo_mt[flow] = mt
  return mt
end
-- (made apart: a function that makes a closure closes its upvalues on every
-- return, the found one's too, and LuaJIT compiles no trace through that
-- (NYI UCLO): every run's start stayed in the interpreter, ~100 more
-- first-level cache misses per sync webhook request, bench/instr-ab.sh)
local function typo_mt_of(flow)
  return typo_mt[flow] or new_typo_mt(flow)
end

-- A flow that declares no settings has nothing a run could be given in
-- ctx.settings: its runs share one empty table per version (a table per run
-- was one of the blocks a sync webhook request allocates), read-only so
-- that no run leaves anything in it for the next (a write, a rawset, a
-- table.insert raise, naming it: the sandbox refuses the last two).
local none_of = setmetatable({}, { __mode = "k" }) -- flow version -> its runs' shared ctx.settings
local function shared_none(flow)
  local typo = typo_mt_of(flow)
  local flow_name = flow.name
  local t = setmetatable({}, { __metatable = false, __index = typo.__index, __newindex = function(_, name)
    error("ctx.settings is read-only: " .. tostring(flow_name) .. " declares no settings (setting '" ..
      tostring(name):sub(1, 64) .. "')", 2)
  end })
  require("rill.sandbox").read_only(t, "ctx.settings")
  none_of[flow] = t
  return t
end

function settings.for_run(flow, recorded)
  local decls = flow.settings
  if decls == nil or next(decls) == nil then return none_of[flow] or shared_none(flow) end
  local out = settings.values(flow)
  if type(recorded) == "table" then
    for name, v in pairs(recorded) do
      if out[name] ~= nil and decls[name] and check(decls[name], v) ~= nil then out[name] = v end
    end
  end
  return setmetatable(out, typo_mt_of(flow))
end

-- no_flow(name, versions) -> "no flow named NAME (did you mean 'X'?)", X
-- the closest of the versions' flow names (a table of versions, any keys).
function settings.no_flow(name, versions)
  local names = {}
  for _, v in pairs(versions) do names[#names + 1] = v.name end
  table.sort(names)
  local guess = require("rill.triggers").closest(name, names)
  return "no flow named " .. tostring(name):sub(1, 64) .. (guess and (" (did you mean '" .. guess .. "'?)") or "")
end

-- strays(t, versions, path) -> warnings for the file's entries no version
-- reads: a flow that is not loaded (with a "did you mean"), or that
-- declares no settings. Sorted.
local function strays(t, versions, path)
  local by_name = {}
  for _, v in pairs(versions) do by_name[v.name] = v end
  local out = {}
  for name in pairs(t) do
    local v = by_name[name]
    if not v then
      out[#out + 1] = path .. ": " .. settings.no_flow(name, versions) .. ": its values are not used"
    elseif not next(v.settings or {}) then
      out[#out + 1] = string.format("%s: flow %s declares no settings: its values are not used", path, name)
    end
  end
  table.sort(out)
  return out
end

-- apply(versions, dir) -> file -> error, for versions (file -> version) whose
-- values in the file do not validate (the others' values are in force),
-- and the warnings for entries no version reads (strays).
function settings.apply(versions, dir)
  local t, text_or_err = settings.read(dir)
  local err = not t and text_or_err or nil
  settings.applied_text = t and text_or_err or nil
  local bad, next_current = {}, {}
  for file, v in pairs(versions) do
    if next(v.settings or {}) then
      local values, why
      if t then
        values, why = settings.validate(v.settings, t[v.name] or {}, v.name .. ".")
        if why then why = dir .. "/" .. settings.FILE .. ": " .. why end
      else
        why = err
      end
      if values then next_current[v.name] = values else bad[file] = why end
    end
  end
  for name, values in pairs(next_current) do settings.current[name] = values end
  return bad, t and strays(t, versions, dir .. "/" .. settings.FILE) or {}
end

-- A JSON text of the file for people to read and edit: one flow per block,
-- one setting per line, in name order.
local function render(t)
  local flows = {}
  for name in pairs(t) do flows[#flows + 1] = name end
  table.sort(flows)
  local out = {}
  for i, flow in ipairs(flows) do
    if not is_object(t[flow]) then
      -- not a flow's settings (edited by hand): kept as it is
      out[i] = "  " .. json.encode(flow) .. ": " .. json.encode(t[flow])
      goto next_flow
    end
    local names = {}
    for n in pairs(t[flow]) do names[#names + 1] = n end
    table.sort(names)
    local lines = {}
    for j, n in ipairs(names) do
      lines[j] = "    " .. json.encode(n) .. ": " .. json.encode(t[flow][n])
    end
    out[i] = "  " .. json.encode(flow) .. ": {" .. (#lines > 0 and ("\n" .. table.concat(lines, ",\n") .. "\n  ") or "")
      .. "}"
    ::next_flow::
  end
  return "{\n" .. table.concat(out, ",\n") .. "\n}\n"
end

-- change(dir, flow, changes) -> true, or nil, why and what failed
-- ("invalid": a value; "broken": the file's text, left as it is, to fix by
-- hand; "file": reading or writing the file): validates changes
-- (name -> value; json.null: back to the default) against the version's
-- declarations and writes them into the file (written whole, then renamed
-- over the old one: a reader never sees half of it). The next reload
-- applies them.
function settings.change(dir, flow, changes)
  local values, why = settings.validate(flow.settings or {}, changes)
  if not values then return nil, why, "invalid" end
  local t, err, what = settings.read(dir)
  if not t then
    if what == "broken" then err = err .. " (fix or remove the file by hand; nothing was written)" end
    return nil, err, what
  end
  local mine = is_object(t[flow.name]) and t[flow.name] or {} -- (another value is not settings: replaced)
  for name, v in pairs(changes) do
    if v == json.null then mine[name] = nil else mine[name] = values[name] end
  end
  t[flow.name] = next(mine) and mine or nil
  local path = dir .. "/" .. settings.FILE
  local tmp = path .. ".tmp~"
  local f, ferr = io.open(tmp, "w")
  if not f then return nil, "cannot write " .. tmp .. ": " .. tostring(ferr), "file" end
  local ok, werr = f:write(render(t))
  f:close()
  if not ok then
    os.remove(tmp)
    return nil, "cannot write " .. tmp .. ": " .. tostring(werr), "file"
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then return nil, "cannot replace " .. path .. ": " .. tostring(rerr), "file" end
  return true
end

-- list(flow) -> array of {name, type, default, value, description} in name order.
function settings.list(flow)
  local values = settings.values(flow)
  local out = {}
  for name, d in pairs(flow.settings or {}) do
    out[#out + 1] = { name = name, type = d.type, default = d.default, value = values[name], description = d.description }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- describe(flow) -> lines "flow.name = value (type, default D): description".
function settings.describe(flow)
  local lines = {}
  for _, s in ipairs(settings.list(flow)) do
    lines[#lines + 1] = string.format("%s.%s = %s (%s, default %s)%s", flow.name, s.name,
      type(s.value) == "string" and json.encode(s.value) or tostring(s.value), s.type,
      type(s.default) == "string" and json.encode(s.default) or tostring(s.default),
      s.description and (": " .. s.description) or "")
  end
  return lines
end

return settings

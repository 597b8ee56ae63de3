-- lint: rill check's static analysis of flow files (and of their test
-- files, NAME.test.lua, as trusted LuaJIT code with test()), by luacheck
-- (Debian's lua-check). The luacheck configuration is made from the
-- globals a flow really runs with (flows.environment(): the sandbox and
-- rill's modules, with their fields), so it cannot drift from them;
-- `rill check --luacheck-config` prints it for an editor.
-- What is an error and what a warning (docs/flows.md, "rill check"):
--   error:   a name that does not exist: an undefined global (113) that
--            the file does not set itself, an undefined field of one of
--            rill's modules (143: json.encdoe), and what luacheck cannot
--            parse (0xx);
--   warning: everything else: unused variables, values and labels (2xx),
--            shadowing (4xx), setting globals (111, 112, 12x, 142), dead
--            code (5xx)...
-- Unused function arguments (run = function(ctx) with ctx unused) and line
-- lengths are not reported.
local lint = {}

local ERRORS = { ["113"] = true, ["143"] = true }

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if is_ident(k) then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys
end

-- The luacheck definition of one global or field: its fields (for a plain
-- table), or any field (a proxy such as env, whose names are the
-- environment's), depth-limited.
local function definition(v, depth, seen)
  if type(v) ~= "table" then return "{}" end
  local mt = debug.getmetatable(v)
  if mt ~= nil or depth > 2 or seen[v] then return "{ other_fields = true }" end
  seen[v] = true
  local parts = {}
  for _, k in ipairs(sorted_keys(v)) do
    parts[#parts + 1] = string.format("%s = %s", k, definition(v[k], depth + 1, seen))
  end
  seen[v] = nil
  return "{ fields = { " .. table.concat(parts, ", ") .. " } }"
end

-- config(env) -> the text of a luacheck configuration for flows whose
-- globals are env's.
function lint.config(env)
  local lines = {
    "-- luacheck configuration for rill flows, made by `rill check` from the globals a flow runs with.",
    "std = \"none\"",
    "unused_args = false",
    "max_line_length = false",
    "read_globals = {",
  }
  for _, k in ipairs(sorted_keys(env)) do
    if k == "_G" then
      lines[#lines + 1] = "  _G = { other_fields = true },"
    else
      lines[#lines + 1] = string.format("  %s = %s,", k, definition(env[k], 1, {}))
    end
  end
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n") .. "\n"
end

-- The configuration for test files (flows/NAME.test.lua): trusted code with
-- LuaJIT's whole library, test(), json and crypto (testing.lua).
lint.TEST_CONFIG = table.concat({
  "-- luacheck configuration for rill's test files (NAME.test.lua), made by `rill check`.",
  "std = \"luajit\"",
  "unused_args = false",
  "max_line_length = false",
  "read_globals = { \"test\", \"json\", \"crypto\" }",
}, "\n") .. "\n"

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- available(program) -> the program's path, or nil when it is not there.
function lint.available(program)
  local p = io.popen("command -v " .. quote(program) .. " 2>/dev/null")
  if not p then return nil end
  local path = p:read("*l")
  p:close()
  return path and path ~= "" and path or nil
end

-- Names luacheck's message is about, for a "did you mean".
local function suggestion(code, msg, env, own)
  if not env then return "" end -- test files: LuaJIT's own names
  local closest = require("rill.triggers").closest
  if code == "113" then
    local name = msg:match("variable '([^']+)'")
    local names = sorted_keys(env)
    for _, n in ipairs(own) do names[#names + 1] = n end
    local best = name and closest(name, names)
    return best and (" (did you mean '" .. best .. "'?)") or ""
  elseif code == "143" then
    local field, global = msg:match("field '([^']+)' of global '([^']+)'")
    local t = global and env[global]
    local best = type(t) == "table" and closest(field, sorted_keys(t))
    return best and (" (did you mean '" .. global .. "." .. best .. "'?)") or ""
  end
  return ""
end

-- luacheck_name(file) -> the name luacheck gives a file it was given: no
-- "./" segments, no doubled "/".
local function luacheck_name(file)
  local name = file:gsub("/+", "/")
  repeat
    local n
    name, n = name:gsub("/%./", "/")
  until n == 0
  return (name:gsub("^%./", ""))
end

-- run(files, program, env[, config]) -> findings {file, line, col, code,
-- severity, message}, or nil and why when luacheck could not be run.
-- config: luacheck's configuration (default: lint.config(env), for flows).
function lint.run(files, program, env, config)
  if #files == 0 then return {} end
  local path = os.tmpname()
  local f = io.open(path, "w")
  if not f then return nil, "cannot write a temporary file for luacheck's configuration" end
  f:write(config or lint.config(env))
  f:close()
  local args, given = {}, {}
  for i, file in ipairs(files) do
    args[i] = quote(file)
    given[luacheck_name(file)] = file
  end
  local cmd = string.format("%s --config %s --formatter plain --codes --no-color --no-cache -- %s 2>&1",
    quote(program), quote(path), table.concat(args, " "))
  local p = io.popen(cmd)
  local text = p and p:read("*a") or ""
  if p then p:close() end
  os.remove(path)
  local findings, other = {}, {}
  for line in text:gmatch("[^\n]+") do
    local file, l, c, kind, code, msg = line:match("^(.-):(%d+):(%d+): %((%u)(%d+)%) (.*)$")
    if file then
      file = given[file] or file -- named as rill names it, not ./x.lua and x.lua for one file
      local severity = (ERRORS[code] or kind == "E" or code:sub(1, 1) == "0") and "error" or "warning"
      findings[#findings + 1] = { file = file, line = tonumber(l), col = tonumber(c), code = code,
        severity = severity, message = msg }
    else
      other[#other + 1] = line
    end
  end
  if #findings == 0 and #other > 0 then
    return nil, "luacheck: " .. table.concat(other, " "):sub(1, 300)
  end
  -- a global the file sets itself (a function defined without local) is
  -- there when it is read: reading it is a warning, like setting it
  local set, own = {}, {}
  for _, f in ipairs(findings) do
    local name = f.code == "111" and f.message:match("'([^']+)'")
    if name and not set[f.file .. "\0" .. name] then
      set[f.file .. "\0" .. name] = true
      own[f.file] = own[f.file] or {}
      table.insert(own[f.file], name)
    end
  end
  for _, f in ipairs(findings) do
    if f.code == "113" and set[f.file .. "\0" .. (f.message:match("variable '([^']+)'") or "")] then
      f.severity = "warning"
    else
      f.message = f.message .. suggestion(f.code, f.message, env, own[f.file] or {})
    end
  end
  return findings
end

-- format(f) -> "flows/x.lua:6:12: error: accessing undefined variable 'jsn' (did you mean 'json'?) [luacheck 113]"
function lint.format(f)
  return string.format("%s:%d:%d: %s: %s [luacheck %s]", f.file, f.line, f.col, f.severity, f.message, f.code)
end

return lint

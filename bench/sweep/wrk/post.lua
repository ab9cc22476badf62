-- POSTs JSON bodies read from a file (one body per line), cycling through them; each wrk thread
-- starts at its own offset so the threads do not send the same body at the same time.
-- Usage: wrk ... -s post.lua URL -- BODIES_FILE THREADS

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local next_index = 0
function setup(thread)
  thread:set("thread_index", next_index)
  next_index = next_index + 1
end

local requests_, n, i = {}, 0, 0
function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      requests_[n] = wrk.format("POST", nil, headers, line)
    end
  end
  if n == 0 then error("no request bodies in " .. tostring(args[1])) end
  local threads = tonumber(args[2]) or 1
  i = ((thread_index or 0) * math.floor(n / threads)) % n
end

function request()
  i = i % n + 1
  return requests_[i]
end

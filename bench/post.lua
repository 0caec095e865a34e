-- wrk script: POST a JSON body read from a file.
--   wrk -s bench/post.lua URL -- BODY_FILE [MAX_RESPONSES_PER_THREAD]
-- With MAX_RESPONSES_PER_THREAD each thread stops after that many responses
-- (used to enqueue a fixed number of runs; a few in flight may still land);
-- 0 or absent = run for -d.
local max_responses = 0
local responses = 0

function init(args)
  local path = args[1]
  if not path then
    error("usage: wrk -s post.lua URL -- BODY_FILE [MAX_RESPONSES_PER_THREAD]")
  end
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  max_responses = tonumber(args[2] or "0") or 0
end

function response(status, headers, body)
  if max_responses > 0 then
    responses = responses + 1
    if responses >= max_responses then
      wrk.thread:stop()
    end
  end
end

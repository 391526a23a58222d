-- The bench's load generator (tests/load): notes POSTed by wrk over its connections, round-robin over
-- the tickets given. Arguments (after `--`): the API token, a label for the notes' bodies, how many notes
-- each thread writes (0: until wrk is stopped), the number of threads, then the ticket ids.
-- A thread that has sent its share asks GET /healthz instead, 50 ms apart on each connection (wrk cannot
-- leave a connection idle), and stops once every note it sent is answered, or after LOST_AFTER answers
-- to those when a note's answer never comes (a connection wrk lost and made again drops what it had
-- sent); it then prints "finished". done() prints one JSON line: how many notes were answered 201, how
-- many otherwise.

local LOST_AFTER = 160  -- about a second of /healthz answers on 8 connections
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  token, label, share, nthreads = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  tickets = {}
  for i = 5, #args do tickets[#tickets + 1] = args[i] end
  sent, created, refused, waited, finished = 0, 0, 0, 0, false
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
  health = wrk.format("GET", "/healthz", {["Authorization"] = "Bearer " .. token}, nil)
end

local function written()
  return share > 0 and sent >= share
end

function delay()
  if written() then return 50 end
  return 0
end

function request()
  if written() then
    return health
  end
  sent = sent + 1
  local ticket = tickets[((sent - 1) * nthreads + id - 1) % #tickets + 1]
  local body = string.format('{"body": "%s %d-%d"}', label, id, sent)
  return wrk.format("POST", "/api/tickets/" .. ticket .. "/notes", nil, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  elseif status == 200 then
    waited = waited + 1
  else
    refused = refused + 1
  end
  if written() and not finished and (created + refused >= share or waited >= LOST_AFTER) then
    -- wrk runs until its --duration even when every thread stopped: tests/load ends it (SIGINT) once
    -- each thread has said so.
    finished = true
    io.write("finished\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local made, failed = 0, 0
  for _, thread in ipairs(threads) do
    made = made + thread:get("created")
    failed = failed + thread:get("refused")
  end
  io.write(string.format('{"created": %d, "refused": %d, "seconds": %.3f}\n', made, failed, summary.duration / 1e6))
end

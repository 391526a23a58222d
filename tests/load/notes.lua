-- The bench's load generator (tests/load.py): notes POSTed by wrk over its connections, round-robin
-- over the tickets given. Arguments (after `--`): the API token, a label for the notes' bodies, how many
-- notes each thread writes (0: until wrk is stopped), the number of threads, then the ticket ids.
-- A thread that has sent its share asks GET /healthz instead (wrk cannot leave a connection idle) and
-- stops once every note it sent is answered, so exactly the share is written. done() prints one JSON line.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  token, label, share, nthreads = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  tickets = {}
  for i = 5, #args do tickets[#tickets + 1] = args[i] end
  sent, created, refused = 0, 0, 0
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
  health = wrk.format("GET", "/healthz", {["Authorization"] = "Bearer " .. token}, nil)
end

function request()
  if share > 0 and sent >= share then
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
  elseif status ~= 200 then
    refused = refused + 1
  end
  if share > 0 and created + refused >= share then
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

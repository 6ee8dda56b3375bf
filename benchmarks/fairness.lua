-- Counts the distinct client ports the server reported in X-Port: how many of wrk's
-- connections were served at all. Printed by done() as "FAIRNESS <served> <total>".
local threads = {}
ports = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  local port = headers["X-Port"] or headers["x-port"]
  if port and port ~= "-" then
    ports[port] = true
  end
end

function done(summary, latency, requests)
  local seen = {}
  local count = 0
  local known = true
  for _, thread in ipairs(threads) do
    local tp = thread:get("ports")
    for port, _ in pairs(tp) do
      if not seen[port] then
        seen[port] = true
        count = count + 1
      end
    end
  end
  io.write(string.format("FAIRNESS %d\n", count))
end

-- Every request head different (a counter in a header), so that no server can take a
-- head it has seen before from a cache: what parsing costs when clients never repeat.
local n = 0

request = function()
  n = n + 1
  return wrk.format("GET", "/", {["Host"] = "bench", ["X-Seq"] = tostring(n)})
end

-- Give back one request on each key: the undo of spend.lua, for the one case that is not a single
-- script call (a route whose quotas fall into different Cluster slots, one of which refused).
-- KEYS[i]: a quota key. ARGV[i]: its emission interval in µs.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '')
  if tat then
    local new = tat - tonumber(ARGV[i])
    if new > now then
      redis.call('SET', key, string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000))
    else
      redis.call('DEL', key)
    end
  end
end
return 1

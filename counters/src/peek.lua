-- Read one key without writing anything: what spend.lua would find there, for a check that only
-- looks (a lockout block). KEYS[1]: a quota key.
-- Returns { the server's time in µs; the theoretical arrival time the key holds, in µs (0: none) }.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = 0
local held = redis.call('GET', KEYS[1])
if held then
  tat = tonumber(held)
  if tat == nil or tat < 0 or tat ~= math.floor(tat) then
    return redis.error_reply('PORTCULLIS_CORRUPT quota key ' .. KEYS[1] .. ' holds no time')
  end
end
return { now, tat }

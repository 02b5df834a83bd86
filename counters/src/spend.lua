-- Spend one request on every key, or on none: the GCRA step of portcullis_core::quota::step,
-- run where the keys live so that no other update comes between reading and writing them.
-- KEYS[i]: a quota key. ARGV[2i-1], ARGV[2i]: its emission interval and burst, in µs.
-- The clock is the server's (TIME), so gateways whose clocks disagree count alike.
-- Returns { 1 if every key admitted and was spent, else 0; the server's time in µs;
--           the theoretical arrival time each key held before, in µs (0: none) }.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local reply = { 0, now }
local admit = true
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  local tat = 0
  if held then
    tat = tonumber(held)
    if tat == nil or tat < 0 or tat ~= math.floor(tat) then
      return redis.error_reply('PORTCULLIS_CORRUPT quota key ' .. key .. ' holds no time')
    end
  end
  reply[i + 2] = tat
  if math.max(tat, now) + tonumber(ARGV[2 * i - 1]) - now > tonumber(ARGV[2 * i]) then
    admit = false
  end
end
if admit then
  for i, key in ipairs(KEYS) do
    local new = math.max(reply[i + 2], now) + tonumber(ARGV[2 * i - 1])
    redis.call('SET', key, string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000))
  end
  reply[1] = 1
end
return reply

end
redis.register_function('cw', function(keys, args)
  local mode, B = args[1], tonumber(args[2])
  local h = redis.call('HGETALL', keys[1])
  local argv = {'0', '1', tostring(#h / 2)}
  for i = 1, #h, 2 do
    argv[#argv + 1] = h[i]
    argv[#argv + 1] = string.sub(h[i + 1], 1, 16)
    argv[#argv + 1] = '0'
    argv[#argv + 1] = '1'
  end
  argv[#argv + 1] = 'n' .. string.sub(h[2] or '', 1, 16)
  if mode == 'build' then return #h / 2 end
  if mode == 'ix' then
    for i = 1, #h, 2 do
      local a, b, c, d = string.byte(h[i], 13, 16)
      redis.call('HDEL', 'rediq:{q}:ix:' .. (((a * 16777216) + (b * 65536) + (c * 256) + d) % B), h[i])
    end
  end
  return complete_body(keys, argv)
end)

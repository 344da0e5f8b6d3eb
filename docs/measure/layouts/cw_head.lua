#!lua name=rqmeasure
-- cw_head.lua — run.sh section "complete": the shipped prelude.lua + complete.lua, pasted by
-- run.sh into the function below, acknowledging everything in the server's active hash (what a
-- fetch just put there), so that no client has to pass the binary ids back.
-- FCALL cw 9 <active> <completed> <processed> <record index> <record count> <dependents>
--             <outbox> <record bucket> <receipt>  <mode> <B>
-- mode: build  = read the active hash and build complete.lua's ARGV, then stop (the overhead)
--       full   = build + complete.lua (retention 0, one record bucket, no unique keys)
--       ix     = build + HDEL of each id from its index bucket <pre>ix:<b> (b = last 4 id bytes
--                as uint32 mod B, key computed here) + complete.lua
local function complete_body(KEYS, ARGV)

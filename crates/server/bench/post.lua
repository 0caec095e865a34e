-- wrk script: POST a fixed JSON body of about BODY_BYTES to the webhook.
local size = tonumber(os.getenv("BODY_BYTES") or "1024")
local pad = string.rep("x", size - 24)
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"patients":[],"pad":"' .. pad .. '"}'

-- SPDX-License-Identifier: BSD-2-Clause

-- the function ngx.run_worker_thread runs in the benchmark's path (d)
local _M = {}

function _M.echo(payload)
    return payload
end

return _M

module lua-resty-nonblocking-ffi/sdk/go

go 1.22

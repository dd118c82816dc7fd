-- Server-side TCP keepalive and user timeout of this session ($1 idle seconds, $2
-- interval seconds, $3 probes, $4 milliseconds), so that the server ends it, and
-- releases its advisory locks, soon after its relay falls silent. Returns the values
-- in effect, as the server reports them (0 on a Unix-domain socket).
SELECT set_config('tcp_keepalives_idle', $1::TEXT, false)::INTEGER,
       set_config('tcp_keepalives_interval', $2::TEXT, false)::INTEGER,
       set_config('tcp_keepalives_count', $3::TEXT, false)::INTEGER,
       set_config('tcp_user_timeout', $4::TEXT, false)::INTEGER

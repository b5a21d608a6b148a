"""Issue 26: reads spread over a read replica (bytemark_mysql_read spread) against
reads on the primary (bytemark_mysql_read primary), side by side.

The replica is a real one, as t/lib/Bytemark/Test.pm makes them: the bench's primary
MariaDB always runs with a binary log (PRIMARY_OPTS: server id 1, row format, strict
GTIDs) from its first start, so its log holds everything done to it (database, users,
schema, the load); a second MariaDB (server id 2, read-only) starts empty, gets
CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos from the empty GTID position and START
SLAVE, and replays that log: the rows reach it by replication, and the bench waits
(MASTER_GTID_WAIT on the primary's gtid_binlog_pos, the row counts compared) until it
has caught up. Replication keeps running during the runs (reads only: nothing to
apply); the report gives the replica's slave status after the last round.
Two more nginx instances, both with the primary and the replica configured, MySQL
only (every request reads MySQL): R-primary with `bytemark_mysql_read primary`,
R-spread with `bytemark_mysql_read spread`. The same tickets load (users 1..all,
--connections) runs against each in --replica-rounds alternating rounds (the order
flips each round); each run reads the CPU time (utime + stime, /proc/PID/stat) of the
primary mariadbd and of the replica's before and after, and counts which server
answered ($bytemark_mysql_server, sampled before the run). The goal: the primary's
CPU per request with spread at most half of that with primary (medians).

`bench.py --only replica-reads` runs this section alone (a smoke test of it).
"""

import os
import signal
import socket
import statistics
import time


# The primary's server options (bench.py's start_mysql): what a replica needs.
# Always, not only when this section runs: a production primary logs too, and
# the bench's other sections only read (a read writes nothing to the log), so
# they measure the same server either way; only the load pays for the log.
PRIMARY_OPTS = ['--server-id=1', '--log-bin=mysql-bin', '--binlog-format=ROW',
                '--gtid-strict-mode=ON', '--sync-binlog=0']
REPL_USER, REPL_PW = 'bytemark_repl', 'bench-repl-pw'

FIELDS = ('rps', 'p50_ms', 'p99_ms', 'nginx_us_per_req', 'primary_us_per_req', 'replica_us_per_req')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_socket(b, proc, sock, err):
    end = time.time() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError('replica mariadbd exited:\n' + open(err, errors='replace').read()[-2000:])
        if os.path.exists(sock):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                s.close()
                return
            except OSError:
                pass
        if time.time() > end:
            raise RuntimeError('replica mariadbd not ready')
        time.sleep(0.05)


def start_replica(b, env):
    """The replica: the primary's options, its own dirs and port, empty; then
    replicate() fills it from the primary's binary log."""
    d = os.path.join(b.workdir, 'replica')
    data, tmp = os.path.join(d, 'mysql-data'), os.path.join(d, 'mysql-tmp')
    os.makedirs(tmp, exist_ok=True)
    b.replica_port = free_port()
    b.replica_sock = os.path.join(d, 'mysql.sock')
    b.replica_err = os.path.join(d, 'mariadb.err')
    bp = '256M' if b.quick else '1536M'
    opts = ['--datadir=' + data, '--tmpdir=' + tmp, '--innodb-buffer-pool-size=' + bp,
            '--innodb-log-file-size=' + ('64M' if b.quick else '512M'),
            '--skip-log-bin', '--skip-name-resolve',
            '--character-set-server=utf8mb4', '--collation-server=utf8mb4_general_ci']
    if os.geteuid() == 0:
        opts.append('--user=root')
    run = env['run']
    run(['mariadb-install-db', '--no-defaults'] + opts +
        ['--auth-root-authentication-method=normal', '--skip-test-db'])
    b.replica = b.procs.spawn('mariadbd-replica', [
        '/usr/sbin/mariadbd', '--no-defaults'] + opts + [
        '--socket=' + b.replica_sock, '--port=%d' % b.replica_port,
        '--bind-address=127.0.0.1', '--pid-file=' + os.path.join(d, 'mariadbd.pid'),
        '--log-error=' + b.replica_err, '--server-id=2', '--read-only=1',
        '--relay-log=relay-bin', '--skip-slave-start',
        '--innodb-flush-log-at-trx-commit=2', '--innodb-doublewrite=0',
        '--innodb-buffer-pool-dump-at-shutdown=0', '--innodb-buffer-pool-load-at-startup=0',
        '--performance-schema=OFF', '--max-connections=500',
    ], os.path.join(d, 'mariadb.out'), stop_sig=signal.SIGKILL)   # data is thrown away
    _wait_socket(b, b.replica, b.replica_sock, b.replica_err)

    def rsql(text, db=None, names=False):
        cmd = ['mariadb', '--no-defaults', '--protocol=SOCKET', '--socket=' + b.replica_sock,
               '--user=root', '--batch', '--default-character-set=utf8mb4']
        if not names:
            cmd.append('--skip-column-names')
        return run(cmd + ([db] if db else []), input=text.encode())

    b.replica_sql = rsql


def slave_status(b):
    """SHOW SLAVE STATUS on the replica, as a dict (empty before CHANGE MASTER TO)."""
    lines = b.replica_sql('SHOW SLAVE STATUS', names=True).rstrip('\n').split('\n')
    if len(lines) < 2:
        return {}
    st = dict(zip(lines[0].split('\t'), lines[1].split('\t')))
    st['gtid_slave_pos'] = b.replica_sql('SELECT @@GLOBAL.gtid_slave_pos').strip()
    return st


def _repl_error(b, why):
    st = slave_status(b)
    return RuntimeError('replica: %s; %s\nreplica error log:\n%s' % (
        why, ', '.join('%s=%s' % (k, st.get(k, '?')) for k in (
            'Slave_IO_Running', 'Slave_SQL_Running', 'gtid_slave_pos', 'Gtid_IO_Pos',
            'Last_IO_Error', 'Last_SQL_Error')),
        ''.join(open(b.replica_err, errors='replace').readlines()[-30:])))


def replicate(b, env):
    """CHANGE MASTER TO the primary from the empty GTID position (its binary log
    holds everything since its first start), START SLAVE, and wait until the
    replica has applied all the primary has logged and holds as many rows.
    Replaying the log rather than seeding from a dump with its GTID position
    (mariadb-dump --gtid --master-data): nothing to carry over, and a seed
    copies the rows too, about as fast as the replay applies them."""
    t = time.time()
    # the replication user; it replicates too (harmless: the replica has no replicas)
    b.sql("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s';\n"
          "GRANT REPLICATION SLAVE ON *.* TO '%s'@'127.0.0.1';" % (REPL_USER, REPL_PW, REPL_USER),
          db=None)
    # a short connect retry, as in the tests: the default waits 60 s between attempts
    b.replica_sql("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', "
                  "MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;\n"
                  "START SLAVE;" % (b.mysql_port, REPL_USER, REPL_PW))
    pos = b.sql('SELECT @@GLOBAL.gtid_binlog_pos', db=None).strip()
    # replaying the load takes about as long as the load: a generous deadline;
    # a stopped slave thread fails at once, one that cannot connect (it retries
    # every second: Connecting) after 30 s
    limit = max(120, b.rows / 2000)
    end, connected = time.time() + limit, time.time()
    while b.replica_sql("SELECT MASTER_GTID_WAIT('%s', 1)" % pos).strip() != '0':
        st = slave_status(b)
        if st.get('Slave_SQL_Running') == 'No' or st.get('Slave_IO_Running') == 'No':
            raise _repl_error(b, 'a slave thread stopped before reaching the primary\'s %s' % pos)
        if st.get('Slave_IO_Running') == 'Yes':
            connected = time.time()
        elif time.time() > connected + 30:
            raise _repl_error(b, 'not connected to the primary for 30 s')
        if time.time() > end:
            raise _repl_error(b, 'did not reach the primary\'s %s in %.0f s' % (pos, limit))
    db = env['db']
    n = int(b.replica_sql('SELECT COUNT(*) FROM bytemark_pass', db).strip())
    np = int(b.sql('SELECT COUNT(*) FROM bytemark_pass').strip())
    if n != np:
        raise _repl_error(b, 'at the primary\'s %s with %d rows, the primary %d' % (pos, n, np))
    secs = time.time() - t
    env['log']('replica MariaDB on port %d replicated the primary\'s binary log up to %s '
               '(%d rows) in %.1fs' % (b.replica_port, pos, n, secs))
    b.res.setdefault('replica_reads', {}).update(
        {'replica_rows': n, 'replica_gtid': pos, 'replica_catch_up_s': secs})


def conf(b, env, port, policy):
    """MySQL only, the primary and the replica, the given read policy."""
    db, user, pw = env['db'], env['user'], env['pw']
    replica = ('host=127.0.0.1 port=%d user=%s password=%s database=%s pool_size=16'
               % (b.replica_port, user, pw, db))
    return '''    bytemark_mysql %s;
    bytemark_mysql %s;
    bytemark_mysql_read %s;
    bytemark_mysql_timeout 2s;

    server {
        listen 127.0.0.1:%d backlog=4096;

        location = /mysql/tickets {
            bytemark_user_id $arg_user_id;
            add_header X-Mysql-Server $bytemark_mysql_server;
            bytemark_tickets;
        }

        location = /status {
            bytemark_status;
        }
    }
''' % (b.mysql_directive(), replica, policy, port)


def start(b, env):
    """env: the bench's run, log, cpu_seconds and MySQL db, user, pw."""
    start_replica(b, env)
    replicate(b, env)
    b.rr = {}
    for policy in ('primary', 'spread'):
        port = free_port()
        name = 'r' + policy
        master = b.start_nginx(name, b.nginx_conf('nginx-' + name, port, conf(b, env, port, policy)),
                               port, b.a.workers)
        b.rr[policy] = (master, port)
    env['log']('nginx R-primary on %d, R-spread on %d: primary + replica, bytemark_mysql_read primary / spread'
        % (b.rr['primary'][1], b.rr['spread'][1]))


def _servers(b, port, n=40):
    """Which server answered n sequential lookups: {'primary': k, 'replica': m}."""
    import http.client
    names = {'127.0.0.1:%d' % b.mysql_port: 'primary', '127.0.0.1:%d' % b.replica_port: 'replica'}
    out = {}
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    for i in range(n):
        conn.request('GET', '/mysql/tickets?user_id=%d' % (1 + i * 7 % b.mysql_users))
        r = conn.getresponse()
        r.read()
        k = names.get(r.getheader('X-Mysql-Server'), r.getheader('X-Mysql-Server') or '-')
        out[k] = out.get(k, 0) + 1
    conn.close()
    return out


def sweep(b, env):
    cpu_seconds = env['cpu_seconds']
    rounds = b.a.replica_rounds or (2 if b.quick else 3)
    dur = max(3, b.duration * 2 // 5)
    runs = {'primary': [], 'spread': [], 'problems': [], 'answered_by': {}}
    for policy in ('primary', 'spread'):
        runs['answered_by'][policy] = _servers(b, b.rr[policy][1])
    for i in range(rounds):
        order = ('primary', 'spread') if i % 2 == 0 else ('spread', 'primary')
        for policy in order:
            master, port = b.rr[policy]
            if i == 0:
                b.wrk(port, '/mysql/tickets?user_id=', 1, b.mysql_users, max(1, b.warmup), b.a.connections,
                      min(b.a.wrk_threads, b.a.connections))
            r0 = cpu_seconds(b.replica.pid)
            m = b.measure('replica-%s' % policy, 'MySQL only, bytemark_mysql_read %s' % policy, master, port,
                          '/mysql/tickets?user_id=', 1, b.mysql_users, ['mysql'], 'mysql',
                          duration=dur, warm=False)
            r1 = cpu_seconds(b.replica.pid)
            x = {k: m[k] for k in FIELDS if k in m}
            x['primary_us_per_req'] = m['mysql_cpu_per_10k'] * 100 if m['requests'] else None
            x['replica_us_per_req'] = (r1 - r0) / m['requests'] * 1e6 if m['requests'] else None
            runs[policy].append(x)
            runs['problems'] += ['%s: %s' % (policy, p) for p in m['problems']]
    for policy in ('primary', 'spread'):
        med = {}
        for k in FIELDS:
            v = [x[k] for x in runs[policy] if x.get(k) is not None]
            med[k] = statistics.median(v) if v else None
        runs[policy + '_median'] = med
    runs.update({'rounds': rounds, 'duration': dur, 'connections': b.a.connections})
    # replication ran during the runs: the replica's threads after the last round
    st = slave_status(b)
    runs['replication_after'] = {k: st.get(k) for k in (
        'Slave_IO_Running', 'Slave_SQL_Running', 'Seconds_Behind_Master', 'gtid_slave_pos',
        'Last_IO_Error', 'Last_SQL_Error')}
    runs['replication_after']['primary_gtid_binlog_pos'] = b.sql('SELECT @@GLOBAL.gtid_binlog_pos',
                                                                 db=None).strip()
    if st.get('Slave_IO_Running') != 'Yes' or st.get('Slave_SQL_Running') != 'Yes':
        runs['problems'].append('replication not running after the last round')
    b.res.setdefault('replica_reads', {}).update(runs)


def goals(b):
    R = b.res.get('replica_reads')
    if not R or not R.get('primary_median'):
        return []
    p = R['primary_median'].get('primary_us_per_req')
    s = R['spread_median'].get('primary_us_per_req')
    q = s / p if p and s is not None else None
    return [{'met': None if q is None else q <= 0.5,
             'text': 'the primary MariaDB\'s CPU per request with reads spread over one replica, against all '
                     'reads on the primary: %s against %s µs, %s× (goal ≤ 0.5×; medians of %d alternating '
                     'rounds at %d connections)%s' % (
                         _fmt(s), _fmt(p), '—' if q is None else '%.2f' % q, R['rounds'], R['connections'],
                         ' ⚠ ' + '; '.join(R['problems'][:2]) if R['problems'] else '')}]


def _fmt(v):
    return '—' if v is None else ('%.3f' % v if v < 10 else '%.1f' % v)


def md(b):
    R = b.res.get('replica_reads')
    if not R or not R.get('primary_median'):
        return ''
    catch_up = '%.1f' % R['replica_catch_up_s'] if 'replica_catch_up_s' in R else '?'
    out = ['## Replica reads (issue 26)', '',
           'MySQL only, every request a MySQL read, users 1..all, %d connections: one nginx with '
           '`bytemark_mysql_read primary` and one with `spread`, both configured with the primary and a '
           'read replica: a second MariaDB replicating from the primary (binary log, row format, '
           'GTIDs; `CHANGE MASTER TO … MASTER_USE_GTID=slave_pos`, `START SLAVE`), which replayed the '
           'primary\'s log from its start — schema, users and the %s rows — up to %s in %s s before the '
           'runs; in %d alternating rounds of %d s; medians. *µs / req* is each mariadbd\'s CPU time '
           '(utime + stime) per request; *answered by* counts `$bytemark_mysql_server` of 40 lookups '
           'before the runs.' % (R['connections'], R.get('replica_rows', '?'), R.get('replica_gtid', '?'),
                                 catch_up, R['rounds'], R['duration']), '',
           '| read policy | req/s | p50 ms | p99 ms | nginx worker µs / req | primary µs / req '
           '| replica µs / req | answered by |',
           '|---|--:|--:|--:|--:|--:|--:|---|']
    for policy in ('primary', 'spread'):
        x = R[policy + '_median']
        out.append('| `%s`%s | %.0f | %.2f | %.2f | %.1f | %s | %s | %s |' % (
            policy, ' ⚠' if R['problems'] else '', x['rps'], x['p50_ms'], x['p99_ms'], x['nginx_us_per_req'],
            _fmt(x['primary_us_per_req']), _fmt(x['replica_us_per_req']),
            ', '.join('%s %d' % kv for kv in sorted(R['answered_by'][policy].items()))))
    A = R.get('replication_after') or {}
    out += ['', 'Replication after the last round: Slave_IO_Running %s, Slave_SQL_Running %s, '
            'Seconds_Behind_Master %s, the replica at GTID %s, the primary\'s binary log at %s%s.' % (
                A.get('Slave_IO_Running'), A.get('Slave_SQL_Running'), A.get('Seconds_Behind_Master'),
                A.get('gtid_slave_pos') or '—', A.get('primary_gtid_binlog_pos') or '—',
                ''.join('; %s: %s' % (k, A[k]) for k in ('Last_IO_Error', 'Last_SQL_Error') if A.get(k)))]
    out += ['', 'Goals:', '']
    for g in goals(b):
        out.append('- **%s** — %s' % ('met' if g['met'] else ('NOT MET' if g['met'] is not None
                                                              else 'not measured'), g['text']))
    return '\n'.join(out)

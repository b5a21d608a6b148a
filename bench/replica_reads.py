"""Issue 26: reads spread over a read replica (bytemark_mysql_read spread) against
reads on the primary (bytemark_mysql_read primary), side by side.

A second MariaDB, the replica, gets a copy of the primary's table (SELECT ... INTO
OUTFILE, LOAD DATA INFILE: the same rows, ids included). The bench does not run
replication: the load is reads only, so a replica would have nothing to apply
meanwhile (t/93-replica-reads.t runs real replication). Two more nginx instances,
both with the primary and the replica configured, MySQL only (every request reads
MySQL): R-primary with `bytemark_mysql_read primary`, R-spread with
`bytemark_mysql_read spread`. The same tickets load (users 1..all, --connections)
runs against each in --replica-rounds alternating rounds (the order flips each
round); each run reads the CPU time (utime + stime, /proc/PID/stat) of the primary
mariadbd and of the replica's before and after, and counts which server answered
($bytemark_mysql_server, sampled before the run). The goal: the primary's CPU per
request with spread at most half of that with primary (medians).

`bench.py --only replica-reads` runs this section alone (a smoke test of it).
"""

import os
import signal
import socket
import statistics
import time


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
    """The replica: the primary's options, its own dirs and port, a copy of the table."""
    d = os.path.join(b.workdir, 'replica')
    data, tmp = os.path.join(d, 'mysql-data'), os.path.join(d, 'mysql-tmp')
    os.makedirs(tmp, exist_ok=True)
    b.replica_port = free_port()
    b.replica_sock = os.path.join(d, 'mysql.sock')
    bp = '256M' if b.quick else '1536M'
    opts = ['--datadir=' + data, '--tmpdir=' + tmp, '--innodb-buffer-pool-size=' + bp,
            '--innodb-log-file-size=' + ('64M' if b.quick else '512M'),
            '--skip-log-bin', '--skip-name-resolve',
            '--character-set-server=utf8mb4', '--collation-server=utf8mb4_general_ci']
    if os.geteuid() == 0:
        opts.append('--user=root')
    run, log = env['run'], env['log']
    t = time.time()
    run(['mariadb-install-db', '--no-defaults'] + opts +
        ['--auth-root-authentication-method=normal', '--skip-test-db'])
    err = os.path.join(d, 'mariadb.err')
    b.replica = b.procs.spawn('mariadbd-replica', [
        '/usr/sbin/mariadbd', '--no-defaults'] + opts + [
        '--socket=' + b.replica_sock, '--port=%d' % b.replica_port,
        '--bind-address=127.0.0.1', '--pid-file=' + os.path.join(d, 'mariadbd.pid'),
        '--log-error=' + err, '--server-id=2', '--read-only=1',
        '--innodb-flush-log-at-trx-commit=2', '--innodb-doublewrite=0',
        '--innodb-buffer-pool-dump-at-shutdown=0', '--innodb-buffer-pool-load-at-startup=0',
        '--performance-schema=OFF', '--max-connections=500',
    ], os.path.join(d, 'mariadb.out'), stop_sig=signal.SIGKILL)   # data is thrown away
    _wait_socket(b, b.replica, b.replica_sock, err)

    def rsql(text, db=None):
        cmd = ['mariadb', '--no-defaults', '--protocol=SOCKET', '--socket=' + b.replica_sock,
               '--user=root', '--batch', '--skip-column-names', '--default-character-set=utf8mb4']
        return run(cmd + ([db] if db else []), input=text.encode())

    b.replica_sql = rsql
    db, user, pw = env['db'], env['user'], env['pw']
    rsql("""CREATE DATABASE %(db)s CHARACTER SET utf8mb4;
CREATE USER '%(u)s'@'127.0.0.1' IDENTIFIED BY '%(pw)s';
CREATE USER '%(u)s'@'localhost' IDENTIFIED BY '%(pw)s';
GRANT SELECT ON %(db)s.* TO '%(u)s'@'127.0.0.1';
GRANT SELECT ON %(db)s.* TO '%(u)s'@'localhost';""" % {'db': db, 'u': user, 'pw': pw})
    with open(os.path.join(env['root'], 'sql', 'schema.sql')) as f:
        rsql(f.read(), db)
    dump = os.path.join(b.workdir, 'replica-copy.tsv')
    b.sql("SELECT * FROM bytemark_pass INTO OUTFILE '%s'" % dump)
    rsql("SET SESSION unique_checks=0; LOAD DATA INFILE '%s' INTO TABLE bytemark_pass;\n"
         "ANALYZE TABLE bytemark_pass;" % dump, db)
    os.unlink(dump)
    n = int(rsql('SELECT COUNT(*) FROM bytemark_pass', db).strip())
    log('replica MariaDB up on port %d with a copy of the %d rows in %.1fs'
        % (b.replica_port, n, time.time() - t))
    b.res.setdefault('replica_reads', {})['replica_rows'] = n


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
    """env: the bench's run, log, cpu_seconds, root and MySQL db, user, pw."""
    start_replica(b, env)
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
    out = ['## Replica reads (issue 26)', '',
           'MySQL only, every request a MySQL read, users 1..all, %d connections: one nginx with '
           '`bytemark_mysql_read primary` and one with `spread`, both configured with the primary and a '
           'read replica (a second MariaDB with a copy of the %s rows: reads only, no replication run), '
           'in %d alternating rounds of %d s; medians. *µs / req* is each mariadbd\'s CPU time '
           '(utime + stime) per request; *answered by* counts `$bytemark_mysql_server` of 40 lookups '
           'before the runs.' % (R['connections'], R.get('replica_rows', '?'), R['rounds'], R['duration']), '',
           '| read policy | req/s | p50 ms | p99 ms | nginx worker µs / req | primary µs / req '
           '| replica µs / req | answered by |',
           '|---|--:|--:|--:|--:|--:|--:|---|']
    for policy in ('primary', 'spread'):
        x = R[policy + '_median']
        out.append('| `%s`%s | %.0f | %.2f | %.2f | %.1f | %s | %s | %s |' % (
            policy, ' ⚠' if R['problems'] else '', x['rps'], x['p50_ms'], x['p99_ms'], x['nginx_us_per_req'],
            _fmt(x['primary_us_per_req']), _fmt(x['replica_us_per_req']),
            ', '.join('%s %d' % kv for kv in sorted(R['answered_by'][policy].items()))))
    out += ['', 'Goals:', '']
    for g in goals(b):
        out.append('- **%s** — %s' % ('met' if g['met'] else ('NOT MET' if g['met'] is not None
                                                              else 'not measured'), g['text']))
    return '\n'.join(out)

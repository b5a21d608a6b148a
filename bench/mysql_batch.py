"""Issue 27: MySQL lookups coalesced (bytemark_mysql_batch, the default) against
one query per lookup (bytemark_mysql_batch 1), side by side.

Two more nginx instances with `bytemark_mysql_batch 1` run next to nginx A and B:
B1 (MySQL only) and A1 (MongoDB miss, then MySQL; no micro-cache). Each scenario
is measured at each of --conn-levels connections in --batch-rounds alternating
rounds (the order flips each round), against the same servers and data, so that
what else happens on the machine falls on both sides alike; the report takes
medians. Statements per request come from the server's Com_stmt_execute, read
around each run but the first of each side (its warm-up would count too).

`bench.py --only mysql-batch` runs this section alone (a smoke test of it).
"""

import socket
import statistics


SCENARIOS = (
    # key, label, prefix, current nginx, batch-1 nginx, users, databases
    ('mysql', 'MySQL, no MongoDB configured', '/mysql/tickets?user_id=', 'b', 'mysql', ['mysql']),
    ('fallback', 'MySQL fallback after a MongoDB miss (fill off)', '/fallback/tickets?user_id=', 'a',
     'fallback', ['mongo', 'mysql']),
)

FIELDS = ('rps', 'p50_ms', 'p99_ms', 'nginx_us_per_req', 'mysql_cpu_per_10k')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(b, static_body):
    """nginx A1 and B1: A's and B's configurations with bytemark_mysql_batch 1."""
    one = '    bytemark_mysql_batch 1;\n'
    b.port_b1 = free_port()
    b.nginx_b1 = b.start_nginx('b1', b.nginx_conf('nginx-b1', b.port_b1, one + b.conf_b(b.port_b1)),
                               b.port_b1, b.a.workers)
    b.port_a1 = free_port()
    b.nginx_a1 = b.start_nginx('a1', b.nginx_conf('nginx-a1', b.port_a1,
                                                  one + b.conf_a(b.port_a1, False, static_body)),
                               b.port_a1, b.a.workers)


def executes(b):
    out = b.sql("SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'")
    return int(out.split()[-1])


def sweep(b):
    nm, nu = b.mongo_users, b.mysql_users
    levels = [int(x) for x in str(b.a.conn_levels).split(',') if x.strip()]
    rounds = b.a.batch_rounds or (2 if b.quick else 3)
    sides = {'a': ((b.nginx_a, b.port_a), (b.nginx_a1, b.port_a1)),
             'b': ((b.nginx_b, b.port_b), (b.nginx_b1, b.port_b1))}
    b.check(b.port_b1, '/mysql/tickets?user_id=1', 'mysql')
    b.check(b.port_a1, '/fallback/tickets?user_id=%d' % (nm + 1), 'mysql')
    runs = {}
    for key, label, prefix, which, _, dbs in SCENARIOS:
        lo = 1 if key == 'mysql' else nm + 1
        cur, one = sides[which]
        runs[key] = {}
        for c in levels:
            # runs of 2/5 of --duration, as the ceiling's rounds: the
            # section stays a few minutes long at three rounds
            dur = b.c1_duration if c == 1 else max(3, b.duration * 2 // 5)
            r = {'coalesced': [], 'batch1': [], 'problems': []}
            for i in range(rounds):
                order = (('coalesced', cur), ('batch1', one))
                for side, (master, port) in (order if i % 2 == 0 else order[::-1]):
                    e0 = executes(b)
                    m = b.measure('batch-%s-%s' % (key, side), label, master, port, prefix, lo, nu, dbs, 'mysql',
                                  conns=c, duration=dur, warm=(i == 0),
                                  mongo_server='stand-in' if 'mongo' in dbs else None)
                    x = {k: m[k] for k in FIELDS}
                    x['mysql_us_per_req'] = m['mysql_cpu_per_10k'] * 100
                    if i > 0 and m['requests']:
                        x['statements_per_req'] = (executes(b) - e0) / m['requests']
                    r[side].append(x)
                    r['problems'] += ['%s: %s' % (side, p) for p in m['problems']]
            for side in ('coalesced', 'batch1'):
                med = {}
                for k in FIELDS + ('mysql_us_per_req', 'statements_per_req'):
                    v = [x[k] for x in r[side] if x.get(k) is not None]
                    med[k] = statistics.median(v) if v else None
                r[side + '_median'] = med
            runs[key][str(c)] = r
    b.res['mysql_batch'] = {'levels': levels, 'rounds': rounds, 'runs': runs,
                            'duration': b.duration, 'c1_duration': b.c1_duration}


def _ratio(r, k):
    a, o = r['coalesced_median'].get(k), r['batch1_median'].get(k)
    return a / o if a is not None and o else None


def goals(b):
    """The issue's goals, at 32 connections (p50: at 1), from the medians."""
    M = b.res.get('mysql_batch')
    if not M:
        return []
    G = []
    runs = M['runs']
    for key, what, lv, k, limit, cmp in (
            ('mysql', 'nginx worker CPU per request at 32 connections', 32, 'nginx_us_per_req', 0.55, 'le'),
            ('mysql', 'MariaDB CPU per request at 32 connections', 32, 'mysql_us_per_req', 0.5, 'le'),
            ('mysql', 'p99 at 32 connections', 32, 'p99_ms', 1.2, 'le'),
            ('mysql', 'p50 at 1 connection', 1, 'p50_ms', 0.05, 'within'),
            ('fallback', 'miss → MySQL: nginx worker CPU per request at 32 connections', 32,
             'nginx_us_per_req', 1.0, 'lt'),
            ('fallback', 'miss → MySQL: MariaDB CPU per request at 32 connections', 32,
             'mysql_us_per_req', 1.0, 'lt')):
        r = runs.get(key, {}).get(str(lv))
        if not r:
            G.append({'met': None, 'text': '%s: not measured (no run at %d connections)' % (what, lv)})
            continue
        q = _ratio(r, k)
        # p50 at c=1 is the lone lookup's path, the same code on both sides:
        # "unchanged" fails only when it is slower by more than the margin
        met = None if q is None else (q <= 1 + limit if cmp == 'within'
                                      else q <= limit if cmp == 'le' else q < limit)
        goal = ('unchanged: at most %.0f %% slower' % (limit * 100) if cmp == 'within'
                else '≤ %.2f×' % limit if cmp == 'le' else '< 1×')
        G.append({'met': met, 'text': '%s, coalescing against `bytemark_mysql_batch 1`: %s against %s, '
                  '%s× (goal %s; medians of %d alternating rounds)%s' % (
                      what, _fmt(r['coalesced_median'].get(k)), _fmt(r['batch1_median'].get(k)),
                      '—' if q is None else '%.2f' % q, goal, M['rounds'],
                      ' ⚠ ' + '; '.join(r['problems'][:2]) if r['problems'] else '')})
    return G


def _fmt(v):
    return '—' if v is None else ('%.3f' % v if v < 10 else '%.1f' % v)


def md(b):
    M = b.res.get('mysql_batch')
    if not M:
        return ''
    out = ['## MySQL coalescing (issue 27)', '',
           'MySQL lookups with coalescing on (the default `bytemark_mysql_batch`) and with '
           '`bytemark_mysql_batch 1` (one query per lookup), each on an nginx of its own against the same '
           'servers and data, at %s connections, in %d alternating rounds (%d s per run at c=1, %d s '
           'otherwise, the first run of each side after a warm-up); medians. *MariaDB µs / req* is the server\'s CPU per request; *statements / req* '
           'the server\'s `Com_stmt_execute` per request (rounds after the first).' % (
               ', '.join(str(x) for x in M['levels']), M['rounds'], M['c1_duration'],
               max(3, M['duration'] * 2 // 5)), '',
           '| scenario | connections | mysql batch | req/s | p50 ms | p99 ms | nginx worker µs / req '
           '| MariaDB µs / req | statements / req |',
           '|---|--:|---|--:|--:|--:|--:|--:|--:|']
    for key, label, _, _, _, _ in SCENARIOS:
        for lv in M['levels']:
            r = M['runs'].get(key, {}).get(str(lv))
            if not r:
                continue
            for side, name in (('coalesced', 'default'), ('batch1', '1')):
                x = r[side + '_median']
                out.append('| %s%s | %d | %s | %.0f | %.2f | %.2f | %.1f | %.1f | %s |' % (
                    label, ' ⚠' if r['problems'] else '', lv, name, x['rps'], x['p50_ms'], x['p99_ms'],
                    x['nginx_us_per_req'], x['mysql_us_per_req'], _fmt(x.get('statements_per_req'))))
    out += ['', 'Goals:', '']
    for g in goals(b):
        out.append('- **%s** — %s' % ('met' if g['met'] else ('NOT MET' if g['met'] is not None
                                                              else 'not measured'), g['text']))
    return '\n'.join(out)

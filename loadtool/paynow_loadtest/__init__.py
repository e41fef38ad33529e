"""The load tool of paynow-service, a distribution of its own (`paynow-loadtest`, in `loadtool/`).

`paynow-service loadtest ARGS` (or `paynow-loadtest ARGS`, `python -m paynow_loadtest ARGS`) runs
`cli.main`. The modules, one job each:

- `traffic`: the traffic model and its planner (users, orders, duplicates, bursts, unknown
  products, refunds, subscriptions, the app's spends), shared by the tests and the tool;
  `events` builds each realistic event with what it must do;
- `webhook`: the one sender of signed PayNow webhooks (tests and tool);
- `driver`: the open-loop sender (on `lean_http`); `stack`: the service it is sent to, its
  processes started (`processes`) or found at --url;
- `floor`: the floor, the queue-mode webhook's own work with no framework;
- `spends`: the app's spends run beside the traffic (`app_double`, the app's points code);
- `expectation`, `state`, `invariants` (with `wallet_audit`): what a run must leave in
  Firestore and the DLQ, reading it back, and the checks;
- `phases`: warm-up, the service's and the floor's turns, the final verification; `find_max`;
- `results`: what a phase measured; `report`, `markdown`, `plots`: the JSON and Markdown report
  and the PNG plot (matplotlib);
- `cpu`: CPU ms per event of every process (from /proc) and the pinned mode (`--pin`);
- `round_robin`: a round-robin proxy before several `serve` replicas (bench/replicas_bench.py,
  tests/chaos/test_replicas.py);
- `cli`: the options and `main(argv) -> int`.
"""

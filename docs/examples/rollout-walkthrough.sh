#!/bin/bash
# The README's rollout walk-through as separate processes on this host: an origin, a gateway and 4
# directed devices from docs/examples, then the rollout of docs/examples/rollout.json driven with the
# CLI (tokens, four eyes, start, the QA hold, resume) and the audit log verified. Run from anywhere
# after `cargo build --release`; W=path/to/wardswarm to use another binary. Uses ports 8080, 14100
# and 18000 on 127.0.0.1.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
W=${W:-$REPO/target/release/wardswarm}
D=$(mktemp -d /tmp/walk.XXXX); cd "$D"; echo "dir $D"
$W keygen --out root.key >/dev/null; $W keygen --out release.key >/dev/null; $W keygen --out membership.key >/dev/null
$W root init --root-key root.key --release-key release.key --membership-key membership.key --expires 365d --out root.json
head -c 4194304 /dev/urandom > v1.img; cp v1.img v2.img; head -c 65536 /dev/urandom | dd of=v2.img bs=65536 seek=3 conv=notrunc 2>/dev/null
mkdir -p origin/releases
$W release build --target v2.img --product infusion-pump --hardware pump-rev-c --version 4.2.1 --counter 42 --expires 90d --key release.key --root root.json --out origin/releases/4.2.1 >/dev/null
$W origin publish origin --key release.key --root root.json --expires 7d >/dev/null
$W origin serve origin --listen 127.0.0.1:18000 > origin.log 2>&1 & OP=$!
$W keygen --out gateway.key >/dev/null
$W cert issue --root root.json --key membership.key --ward icu-3 --device icu-3-gw --role gateway --peer $($W peer-id --key gateway.key) --expires 365d --out gateway.cert
sed -e 's|https://updates.example-devices.com/infusion-pump/|http://127.0.0.1:18000/|' -e 's|poll_interval = "5m"|poll_interval = "2s"|' \
    -e 's|/ip4/0.0.0.0/tcp/4100|/ip4/127.0.0.1/tcp/14100|' -e 's|mdns = true|mdns = false|' $REPO/docs/examples/gateway.toml > gateway.toml
$W seeder --config gateway.toml > gateway.log 2>&1 & GP=$!
for i in $(seq 1 30); do grep -q "listening on" gateway.log && break; sleep 0.5; done
GW=$(grep -m1 "listening on" gateway.log | sed 's/listening on //')
PIDS=""
for n in 1 2 3 4; do
  $W keygen --out pump-$n.key >/dev/null
  $W cert issue --root root.json --key membership.key --ward icu-3 --device pump-$n --role device --peer $($W peer-id --key pump-$n.key) --expires 30d --out pump-$n.cert
  mkdir -p pump-$n/slots; cp v1.img pump-$n/slots/slot-a.img
  LABELS='["icu-3"]'; [ $n = 3 ] && LABELS='["icu-3", "bed-12"]'
  sed -e "s|\"device.key\"|\"pump-$n.key\"|" -e "s|\"device.cert\"|\"pump-$n.cert\"|" -e "s|store = \"store\"|store = \"pump-$n/store\"|" \
      -e "s|/ip4/0.0.0.0/tcp/4101|/ip4/127.0.0.1/tcp/0|" -e "s|\"/ip4/10.20.0.1/tcp/4100/p2p/12D3KooW...\"|\"$GW\"|" -e 's|mdns = true|mdns = false|' \
      -e "s|state = \"agent\"|state = \"pump-$n/agent\"|" -e "s|dir = \"slots\"|dir = \"pump-$n/slots\"|" -e "s|labels = \[\"icu-3\", \"bed-12\"\]|labels = $LABELS|" \
      -e 's|report_interval = "5s"|report_interval = "1s"|' $REPO/docs/examples/device.toml > pump-$n.toml
  $W node --config pump-$n.toml > pump-$n.log 2>&1 & PIDS="$PIDS $!"
done
trap 'kill $OP $GP $PIDS 2>/dev/null' EXIT
export WARDSWARM_API=http://127.0.0.1:8080
for i in $(seq 1 60); do [ -f gateway-state/admin.token ] && break; sleep 0.5; done
export WARDSWARM_TOKEN=$(cat gateway-state/admin.token)
for i in $(seq 1 60); do [ "$(curl -s -H "Authorization: Bearer $WARDSWARM_TOKEN" $WARDSWARM_API/api/v1/devices | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 4 ] && break; sleep 1; done
ALICE=$($W token create --name alice --role operator); BOB=$($W token create --name bob --role approver)
# The example spec, its window opened (always) so the walk-through does not wait for 22:00.
python3 -c "import json; s=json.load(open('$REPO/docs/examples/rollout.json')); s['window']={'schedule':'* * * * *','duration':'7d','timezone':'Europe/Berlin'}; json.dump(s,open('rollout.json','w'))"
WARDSWARM_TOKEN=$ALICE $W rollout create --file rollout.json
WARDSWARM_TOKEN=$ALICE $W rollout approve 1 --remark "mine" || echo "(four eyes: refused as it should be)"
WARDSWARM_TOKEN=$BOB $W rollout approve 1 --remark "release notes read"
WARDSWARM_TOKEN=$ALICE $W rollout start 1
state() { $W rollout show 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
for i in $(seq 1 60); do [ "$(state)" = paused ] && break; sleep 1; done
echo "--- QA hold after the canary:"; $W rollout show 1
WARDSWARM_TOKEN=$ALICE $W rollout resume 1
for i in $(seq 1 120); do [ "$(state)" = finished ] && break; sleep 1; done
echo "--- end:"; $W rollout show 1
$W audit verify gateway-state/audit.jsonl
for n in 1 2 3 4; do python3 -c "import json; print('pump-$n', json.load(open('pump-$n/agent/state.json'))['installed']['version'])"; done

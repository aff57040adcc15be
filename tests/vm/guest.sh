# Runs inside the VM (sourced by /init). Prints each JSON report between markers.
echo "NVR-JSON-BEGIN selftest"
/nvr-edge --config /config.toml --self-test --json --seconds 4 2>/tmp/selftest.log
echo "NVR-JSON-END selftest rc=$?"

# A camera that vanishes mid-run and comes back: unbind vivid.0 once both cameras stream.
/nvr-edge --config /config.toml --self-test --json --seconds 14 > /tmp/vanish.json 2>/tmp/vanish.log &
pid=$!
n=0
while [ "$(grep -c 'camera streaming' /tmp/vanish.log 2>/dev/null)" -lt 2 ] && [ $n -lt 600 ]; do
  sleep 0.1; n=$((n + 1))
done
sleep 2
echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind && echo "NVR-VM unbound vivid.0"
sleep 3
echo vivid.0 > /sys/bus/platform/drivers/vivid/bind && echo "NVR-VM rebound vivid.0"
wait $pid
rc=$?
echo "NVR-JSON-BEGIN vanish"
cat /tmp/vanish.json
echo "NVR-JSON-END vanish rc=$rc"
grep -E "WARN|ERROR" /tmp/vanish.log | head -n 5

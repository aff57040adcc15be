# Runs inside the VM (sourced by /init after NVR_STEPS is set). Prints each JSON report
# between markers; the host asserts on them (check.py, console_driver.py).

# Each step says when it starts and ends (seconds since boot), so a slow host shows
# where the time went.
at() { cut -d' ' -f1 /proc/uptime; }

if [ "${NVR_STEPS#*selftest}" != "$NVR_STEPS" ]; then
  echo "NVR-VM step selftest start $(at)"
  echo "NVR-JSON-BEGIN selftest"
  /nvr-edge --config /config.toml --self-test --json --seconds 4 2>/tmp/selftest.log
  echo "NVR-JSON-END selftest rc=$?"
  echo "NVR-VM step selftest end $(at)"
fi

if [ "${NVR_STEPS#*vanish}" != "$NVR_STEPS" ]; then
  # A camera that vanishes mid-run and comes back: unbind vivid.0 once both cameras stream.
  echo "NVR-VM step vanish start $(at)"
  /nvr-edge --config /config.toml --self-test --json --seconds 14 > /tmp/vanish.json 2>/tmp/vanish.log &
  pid=$!
  # The self-test opens the cameras only after its ring, matching and model checks, which
  # take a minute or more on a slow emulating host: wait for both cameras (bounded: 300 s),
  # or the outage would fall before they opened and test nothing (as it once did).
  n=0
  while [ "$(grep -c 'camera streaming' /tmp/vanish.log 2>/dev/null)" -lt 2 ] && [ $n -lt 3000 ]; do
    sleep 0.1; n=$((n + 1))
  done
  echo "NVR-VM both cameras streaming after $((n / 10)) s (at $(at))"
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
  echo "NVR-VM step vanish end $(at)"
fi

if [ "${NVR_STEPS#*console}" != "$NVR_STEPS" ]; then
  # The recorder with its console on the second serial port, which the host drives. The
  # host ends its session with `log info`; the recorder logs that, and we stop it. It runs
  # as the unit's user, in the unit's groups (video, dialout), not as root: as root, a
  # console the service cannot open once passed here.
  echo "NVR-VM step console start $(at)"
  dev=/dev/ttyS1
  [ -e /dev/hvc0 ] && dev=/dev/hvc0
  sed 's|^data_dir = .*|data_dir = "/tmp/run-data"|' /config.toml > /tmp/run.toml
  printf '\n[console]\nenabled = true\ndevice = "%s"\n' "$dev" >> /tmp/run.toml
  mkdir -p /tmp/run-data && chown 999:999 /tmp/run-data && chmod 0750 /tmp/run-data
  : > /tmp/run.log && chown 999:999 /tmp/run.log
  su -s /bin/sh nvr-edge -c 'umask 0027; exec /nvr-edge --config /tmp/run.toml run 2>>/tmp/run.log' &
  pid=$!
  echo "NVR-VM console on $dev ($(ls -l $dev | cut -c1-10) $(ls -ln $dev | awk '{print $3":"$4}')), recorder as $(su -s /bin/sh nvr-edge -c id)"
  n=0
  while ! grep -q "log filter changed from the console" /tmp/run.log 2>/dev/null && [ $n -lt 4000 ]; do
    sleep 0.1; n=$((n + 1))
  done
  kill -TERM $pid
  wait $pid
  echo "NVR-VM run stopped rc=$?"
  grep -E "console|ERROR" /tmp/run.log | head -n 5
  echo "NVR-VM step console end $(at)"
fi

# Sourced by scripts/test and scripts/bench: start a local stack on free ports
# with a throw-away data directory, wait until it answers, stop it on exit.
# Needs target/debug/local-stack built and cargo-lambda on PATH.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_stack() {
  STACK_API_PORT=$(free_port)
  STACK_DYNAMODB_PORT=$(free_port)
  STACK_DATA_DIR=$(mktemp -d)
  STACK_LOG="$STACK_DATA_DIR/local-stack.log"
  API_PORT=$STACK_API_PORT DYNAMODB_PORT=$STACK_DYNAMODB_PORT DATA_DIR=$STACK_DATA_DIR \
    AGGREGATION_INTERVAL_SECONDS=0 ALERTS_INTERVAL_SECONDS=0 target/debug/local-stack >"$STACK_LOG" 2>&1 &
  STACK_PID=$!
  trap stop_stack EXIT
  echo "waiting for the local stack on port $STACK_API_PORT..."
  python3 - "$STACK_API_PORT" "$STACK_LOG" "$STACK_PID" <<'PY'
import sys, time, urllib.request, urllib.error
port, log, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + 300
while time.time() < deadline:
    try:  # the stack exited (gone, or a zombie its shell has not reaped)?
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    if state in ("Z", "X", "gone"):
        print(open(log).read()[-5000:])
        sys.exit("the local stack exited before it answered")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/proxies", timeout=300)
    except urllib.error.HTTPError as e:
        if e.code == 401:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(1)
print(open(log).read()[-5000:])
sys.exit("the local stack did not come up")
PY
  STACK_URL="http://127.0.0.1:$STACK_API_PORT"
}

stop_stack() {
  kill -TERM "$STACK_PID" 2>/dev/null || true
  wait "$STACK_PID" 2>/dev/null || true
  rm -rf "$STACK_DATA_DIR"
}

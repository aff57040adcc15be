"""What the onnxruntime peers share: time a session's runs and print "p50_ms p99_ms"."""
import time


def print_p50_p99(sess, feeds, iters, warm):
    """`warm` untimed runs, then `iters` timed ones; prints p50 and p99 in ms."""
    for _ in range(warm):
        sess.run(None, feeds)
    lat = []
    for _ in range(iters):
        a = time.perf_counter()
        sess.run(None, feeds)
        lat.append((time.perf_counter() - a) * 1e3)
    lat.sort()
    q = lambda p: lat[round((len(lat) - 1) * p)]  # noqa: E731
    print(f"{q(0.5):.3f} {q(0.99):.3f}")

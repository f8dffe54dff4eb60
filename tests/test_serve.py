"""``deconfoundlm serve``: a real server on 127.0.0.1 (a free port), called over HTTP, stopped
with SIGTERM; the TRL client; the safety rules (loopback by default, tokens, limits)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from deconfoundlm.cli import main

TEXTS = ["You won't believe what happened next", "10 facts about cats", "Why the news is good", "", "a b c"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, body=None, token=None, raw=None, timeout=30):
    """(status, JSON) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Server:
    def __init__(self, model_dir, *extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "deconfoundlm", "serve", str(model_dir), "--port",
                                      str(self.port), *map(str, extra)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.communicate()}")
            try:
                if call(self.url + "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def reward_dir(hashing_reward):
    return hashing_reward


@pytest.fixture(scope="module")
def server(reward_dir):
    srv = Server(reward_dir, "--max-batch", "64", "--max-body-mb", "0.05")
    yield srv
    code, _, err = srv.stop()
    assert code == 0, err  # SIGTERM drains and exits 0


def expected_scores(reward_dir, tmp_path, texts, se=False):
    pd.DataFrame({"headline": texts}).to_csv(tmp_path / "t.csv", index=False)
    assert main(["score", str(reward_dir), str(tmp_path / "t.csv"), "--text", "headline", "--out",
                 str(tmp_path / "s.csv"), *(["--se"] if se else []), "--force"]) == 0
    return pd.read_csv(tmp_path / "s.csv", keep_default_na=False)


def test_score_gives_the_numbers_of_the_score_command(server, reward_dir, tmp_path):
    status, body = call(server.url + "/score", {"texts": TEXTS, "se": True})
    assert status == 200
    want = expected_scores(reward_dir, tmp_path, TEXTS, se=True)
    assert np.max(np.abs(np.array(body["rewards"]) - want["reward"].to_numpy())) < 1e-6
    assert np.max(np.abs(np.array(body["reward_se"]) - want["reward_se"].to_numpy())) < 1e-6


def test_get_reward_scores_the_response_without_its_prompt(server):
    prompt = "Write a headline for: a story about cats.\n"
    status, body = call(server.url + "/get_reward", {"query": [prompt + TEXTS[1], TEXTS[0]], "prompts": [prompt, ""]})
    assert status == 200 and set(body) == {"rewards", "scores"}
    direct = call(server.url + "/score", {"texts": [TEXTS[1], TEXTS[0]]})[1]["rewards"]
    np.testing.assert_allclose(body["rewards"], direct, atol=1e-12)


def test_health_and_info(server, reward_dir):
    assert call(server.url + "/health") == (200, {"status": "ok"})
    status, info = call(server.url + "/info")
    cfg = json.loads((reward_dir / "config.json").read_text())
    assert status == 200 and info["method"] == "deconfound" and info["family"] == "binomial"
    assert info["data_fingerprint"] == cfg["data_fingerprint"] and info["encoder_identity"] == cfg["backbone"]
    assert info["max_batch"] == 64 and info["version"]


@pytest.mark.parametrize("raw, status, needle", [
    (b"not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"text": ["a"]}', 400, "missing field 'texts'"),
    (b'{"texts": "a"}', 400, "list of strings"),
    (b'{"texts": [1, 2]}', 400, "list of strings"),
    (b'{"texts": ["a"], "se": "yes"}', 400, "'se'"),
    (b'{"texts": ["a"], "x": NaN}', 400, "not valid JSON"),
    (json.dumps({"texts": ["a"] * 65}).encode(), 413, "at most 64"),
    (json.dumps({"texts": ["a" * 60_000]}).encode(), 413, "over 0.05 MB"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(server, raw, status, needle):
    got, body = call(server.url + "/score", raw=raw)
    assert got == status and needle in body["error"]
    assert call(server.url + "/health")[0] == 200  # and the server keeps serving


def test_concurrent_clients_get_their_own_answers(server):
    """16 clients at once (the batcher mixes their texts into shared batches)."""
    texts = [[f"headline {i} {j} you" for j in range(1 + i % 5)] for i in range(48)]
    singles = [call(server.url + "/score", {"texts": t})[1]["rewards"] for t in texts]
    results = [None] * len(texts)

    def worker(k):
        for i in range(k, len(texts), 16):
            results[i] = call(server.url + "/score", {"texts": texts[i]})[1]["rewards"]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, singles, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_remote_reward_is_a_trl_reward_function(server):
    from deconfoundlm import remote_reward

    fn = remote_reward(server.url, batch_size=2)
    conversational = [[{"role": "assistant", "content": t}] for t in TEXTS[:3]]
    direct = call(server.url + "/score", {"texts": TEXTS[:3]})[1]["rewards"]
    np.testing.assert_allclose(fn(prompts=["p"] * 3, completions=TEXTS[:3]), direct, atol=1e-12)
    np.testing.assert_allclose(fn(prompts=["p"] * 3, completions=conversational), direct, atol=1e-12)
    with pytest.raises(RuntimeError, match="not reachable"):
        remote_reward(f"http://127.0.0.1:{free_port()}", timeout=2)(completions=["a"])


def test_token_is_required_when_given(reward_dir, tmp_path):
    (tmp_path / "token").write_text("s3cret-token-0123456789\n")
    srv = Server(reward_dir, "--token-file", tmp_path / "token")
    try:
        assert call(srv.url + "/score", {"texts": ["a"]})[0] == 401
        assert call(srv.url + "/score", {"texts": ["a"]}, token="wrong-token-0123456789")[0] == 401
        assert call(srv.url + "/score", {"texts": ["a"]}, token="s3cret-token-0123456789")[0] == 200
        assert call(srv.url + "/info")[0] == 401
        from deconfoundlm import remote_reward

        assert len(remote_reward(srv.url, token_file=tmp_path / "token")(completions=["a", "b"])) == 2
    finally:
        assert srv.stop()[0] == 0


@pytest.mark.parametrize("args, needle", [
    (["--host", "0.0.0.0"], "needs --token-file"),
    (["--token-file", "{short}"], "at least 16 characters"),
    (["--token-file", "{missing}"], "no such file"),
    (["--max-body-mb", "0"], "--max-body-mb"),
])
def test_unsafe_or_bad_options_are_refused_before_serving(reward_dir, tmp_path, capsys, args, needle):
    (tmp_path / "short").write_text("abc\n")
    args = [a.format(short=tmp_path / "short", missing=tmp_path / "nope") for a in args]
    assert main(["serve", str(reward_dir), "--port", str(free_port()), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_a_bad_reward_folder_is_refused_before_serving(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    assert main(["serve", str(tmp_path / "r"), "--port", str(free_port())]) == 2
    assert "not a valid deconfoundlm reward model" in capsys.readouterr().err


def test_sigterm_drains_requests_in_flight(reward_dir):
    srv = Server(reward_dir)
    statuses = []

    def client():
        for _ in range(200):
            try:
                statuses.append(call(srv.url + "/score", {"texts": TEXTS}, timeout=10)[0])
            except OSError:
                statuses.append("refused")  # after the shutdown began: not accepted, not half-answered
                return

    t = threading.Thread(target=client)
    t.start()
    time.sleep(0.5)
    code, _, err = srv.stop()
    t.join(timeout=30)
    assert code == 0, err
    assert statuses and all(s in (200, "refused") for s in statuses) and 200 in statuses
    assert "Traceback" not in err


@pytest.mark.align
def test_grpo_trains_against_the_served_reward(server, tmp_path):
    """The README recipe: TRL's GRPOTrainer with remote_reward as its reward function."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from deconfoundlm import remote_reward
    from deconfoundlm.alignment.policies import tiny_headlines_path

    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=8, report_to=[], use_cpu=True, save_strategy="no",
                      logging_steps=1)
    trainer = GRPOTrainer(model=str(tiny_headlines_path()), reward_funcs=[remote_reward(server.url)], args=args,
                          train_dataset=Dataset.from_dict({"prompt": ["<|headline|>"] * 4}))
    trainer.train()
    logged = [h for h in trainer.state.log_history if any(k.startswith("rewards/") for k in h)]
    assert logged and all(np.isfinite(v) for h in logged for k, v in h.items() if k.startswith("rewards/"))


def test_port_in_use_is_exit_2(reward_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "deconfoundlm", "serve", str(reward_dir), "--port", str(port)],
                             capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert res.returncode == 2 and "could not listen" in res.stderr and "in use" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and "Errno" not in res.stderr  # one line, not uvicorn's own
    assert "serving" not in res.stdout  # "serving" is said only once the port is bound


def test_serving_is_not_announced_before_the_options_are_checked(reward_dir):
    res = subprocess.run([sys.executable, "-m", "deconfoundlm", "serve", str(reward_dir), "--host", "0.0.0.0",
                          "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--token-file" in res.stderr and res.stdout == ""


def test_unknown_paths_and_methods_get_a_json_error_readable_by_requests(server):
    import requests

    r = requests.get(server.url + "/nope", timeout=30)
    assert r.status_code == 404 and "/nope" in r.json()["error"] and "POST /score" in r.json()["error"]
    r = requests.get(server.url + "/score", timeout=30)
    assert r.status_code == 405 and "GET is not allowed on /score" in r.json()["error"]
    assert requests.get(server.url + "/docs", timeout=30).status_code == 404  # no page that needs a CDN
    assert "/score" in requests.get(server.url + "/openapi.json", timeout=30).json()["paths"]


def test_a_10_mb_body_gets_a_413_that_requests_and_urllib_can_read(server):
    """Both clients send the whole body before they read the answer."""
    import requests

    body = json.dumps({"texts": ["x" * 1000] * 10_000}).encode()
    assert len(body) > 10 * 10**6
    r = requests.post(server.url + "/score", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "over 0.05 MB" in r.json()["error"]
    assert call(server.url + "/score", raw=body, timeout=60) == (413, {"error": "the body is over 0.05 MB "
                                                                             "(--max-body-mb)"})
    chunked = requests.post(server.url + "/get_reward", data=iter([b"x" * 100_000] * 100), timeout=60)
    assert chunked.status_code == 413 and "over 0.05 MB" in chunked.json()["error"]  # no Content-Length
    assert call(server.url + "/score", {"texts": ["a"]})[0] == 200  # and it keeps serving


def test_a_slow_body_gets_a_408(reward_dir):
    srv = Server(reward_dir, "--body-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"texts\": ")  # and then nothing
            answer = b""
            while b"}" not in answer:
                got = s.recv(4096)
                if not got:
                    break
                answer += got
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"within 1 s" in body
        assert call(srv.url + "/health")[0] == 200
    finally:
        assert srv.stop()[0] == 0


def test_an_empty_batch_gets_an_empty_answer_as_the_api_does(server, reward_dir):
    from deconfoundlm import load_reward

    assert call(server.url + "/score", {"texts": []}) == (200, {"rewards": []})
    assert call(server.url + "/get_reward", {"query": []}) == (200, {"rewards": [], "scores": []})
    assert load_reward(reward_dir).score([]).shape == (0,)


def test_served_texts_never_grow_the_embedding_cache(tmp_path, tiny_bert):
    """A model encoder (cached): the training texts are in the cache, 100 requests of new texts
    leave the cache file byte for byte as it was."""
    import hashlib

    from conftest import planted_log

    planted_log(300).to_csv(tmp_path / "log.csv", index=False)
    cache = tmp_path / "cache"
    env = {**os.environ, "DECONFOUNDLM_CACHE": str(cache)}
    subprocess.run([sys.executable, "-m", "deconfoundlm", "fit-reward", str(tmp_path / "log.csv"), "--text", "text",
                    "--outcome", "y", "--confounder", "c:numeric", "--encoder", str(tiny_bert), "--out",
                    str(tmp_path / "r"), "--quiet"], check=True, env=env, capture_output=True, timeout=300)
    db = cache / "embeddings.sqlite"
    before = hashlib.sha256(db.read_bytes()).hexdigest(), sorted(p.name for p in cache.iterdir())
    old = os.environ.get("DECONFOUNDLM_CACHE")
    os.environ["DECONFOUNDLM_CACHE"] = str(cache)
    try:
        srv = Server(tmp_path / "r")
    finally:
        os.environ["DECONFOUNDLM_CACHE"] = old or ""
    try:
        for i in range(100):
            status, body = call(srv.url + "/score", {"texts": [f"alpha one {i} two {i * 7} beta", "alpha beta"]})
            assert status == 200 and len(body["rewards"]) == 2
    finally:
        assert srv.stop()[0] == 0
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), sorted(p.name for p in cache.iterdir())) == before

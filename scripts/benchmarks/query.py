"""C-FIND at STUDY level: our node on SQLite and on PostgreSQL against Orthanc, same studies.

The corpus (:mod:`scripts.benchmarks.query_corpus`): by default 10,000
de-identified-looking studies of 2,500 patients, 100,000 instances, loaded
into our index (a fresh SQLite file, and a freshly made PostgreSQL database
``dicom_gateway_bench`` on the cluster of ``DICOM_GATEWAY_TEST_POSTGRESQL_URL``)
and into an Orthanc with its default SQLite index. Before anything is timed
the three must hold as many patients, studies, series and instances, and
every query must return the same studies with the same values from each.

Three servers run side by side on loopback: ``dicom-gateway serve`` on each
database (its defaults, a peer ``BENCH`` with the ``query`` role and scope
``all``) and Orthanc (``BENCH`` among its modalities). DCMTK ``findscu``
(Study Root, ``TCP_NODELAY=1``), one process per query as a user runs it,
asks each server four queries with the same return keys:

- PatientID: one patient's pseudonym, exactly;
- PatientName: a wildcard on the pseudonym's first two characters;
- StudyDate: a one-month range;
- universal: no matching key, every study comes back.

findscu logs each step and each response (``-v -sr``); the benchmark
reads its log through a pipe and notes when each line arrives. Latency
is from "Requesting Association" to "Received Final Find Response": the
association and the C-FIND, not findscu's start-up and data dictionary
(about 50 ms here, the same for every server), which would only dilute
the ratios. First-result latency is from the same start to the first
response line; results/s is the number of matches over the latency. Rounds
interleave the servers (in an order that rotates each round) after
warm-up rounds, and medians are kept. Targets (issue 4): each selective
query no slower than Orthanc's on either database; the universal query at
least half Orthanc's results/s, and streamed: its first result comes
before a tenth of the query's time has passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.benchmarks import query_corpus as corpus_  # noqa: E402
from scripts.benchmarks.query_db import postgresql_bench_url, prepare  # noqa: E402
from tests.conftest import TEST_KEY_HEX, require_tool  # noqa: E402
from tests.interop.conftest import free_port  # noqa: E402
from tests.interop.orthanc import Orthanc, start_orthanc  # noqa: E402

OUR_AE_TITLE = "GATEWAY"
LATENCY_TARGET = 1.0  # ours / Orthanc, at most
RATE_TARGET = 0.5  # ours / Orthanc results/s, at least
STREAM_TARGET = 0.1  # first result / whole query, at most

#: The keys every query returns: a study list's, without the computed ones
#: (ModalitiesInStudy, NumberOfStudyRelated...), which cost Orthanc a visit to
#: each match's series and instances and would flatter the ratios.
RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class Query:
    name: str
    matching: dict[str, str]

    @property
    def keys(self) -> dict[str, str]:
        values = {key: "" for key in RETURN_KEYS}
        values.update(self.matching)
        return values


@dataclass
class _Server:
    name: str
    port: int
    ae_title: str
    stop: Callable[[], None]


def _queries(corpus: corpus_.Corpus) -> list[Query]:
    owners = sorted({study.patient for study in corpus.studies[:50]})
    patient = corpus.patients[owners[len(owners) // 2]]
    prefix = patient.patient_name[:len("ANON^") + 2]
    return [
        Query("PatientID exact", {"PatientID": patient.patient_id}),
        Query("PatientName wildcard", {"PatientName": f"{prefix}*"}),
        Query("StudyDate one month", {"StudyDate": "20230301-20230331"}),
        Query("universal", {}),
    ]


def _dcmtk(name: str) -> str:
    """DCMTK's program, never pynetdicom's app of the same name beside this Python."""
    ours = Path(sys.executable).parent
    folders = [folder for folder in os.environ.get("PATH", "").split(os.pathsep)
               if folder and Path(folder) != ours]
    found = shutil.which(name, path=os.pathsep.join([*folders, "/usr/bin"]))
    return found or require_tool(name, "dcmtk")


def _stop(process: subprocess.Popen[bytes], log_file: Any) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    log_file.close()


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll with DCMTK echoscu until the node answers (it migrates its index first)."""
    echoscu = _dcmtk("echoscu")
    deadline = time.monotonic() + 60
    while subprocess.run([echoscu, "-aet", corpus_.BENCH_AE_TITLE, "-aec", OUR_AE_TITLE,
                          "-to", "2", "127.0.0.1", str(port)],
                         capture_output=True, check=False).returncode != 0:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("serve did not answer C-ECHO within 60 s")
        time.sleep(0.1)


def _start_ours(name: str, root: Path, database_url: str, max_results: int) -> _Server:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "serve.log"
    log_file = log.open("wb")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_GATEWAY_")}
    environment.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
                        "DICOM_GATEWAY_QUERY__MAX_RESULTS": str(max_results),
                        "DICOM_GATEWAY_LOGGING__LEVEL": "WARNING"})
    program = Path(sys.executable).parent / "dicom-gateway"
    process = subprocess.Popen(
        [str(program), "serve", "--port", str(port), "--data-dir", str(root / "var"),
         "--database-url", database_url],
        stdout=subprocess.DEVNULL, stderr=log_file, env=environment, cwd=root)
    server = _Server(name, port, OUR_AE_TITLE, lambda: _stop(process, log_file))
    try:
        _wait_listening(port, process, log)
    except BaseException:
        server.stop()
        raise
    return server


def _orthanc_folder(corpus: corpus_.Corpus, results: Path, rebuild: bool) -> Path:
    """Orthanc's storage and index for ``corpus``: kept from an earlier run, or built now."""
    folder = corpus_.orthanc_folder(results, corpus)
    if rebuild or not (folder / "complete").exists():
        corpus_.discard_others(results, keep=None)
        partial = folder.with_name(folder.name + ".partial")
        print(f"building Orthanc's copy of the corpus in {partial} (kept for later runs)",
              flush=True)
        started = time.monotonic()
        orthanc = start_orthanc(partial, free_port(), free_port())
        try:
            corpus_.upload(corpus, orthanc.http_port)
            statistics_ = orthanc.get("/statistics")
        finally:
            orthanc.stop()
        if int(statistics_["CountInstances"]) != corpus.instance_count:
            raise RuntimeError(f"Orthanc holds {statistics_['CountInstances']} instances "
                               f"of {corpus.instance_count}")
        (partial / "complete").write_text(f"{corpus.signature}\n")
        partial.rename(folder)
        print(f"Orthanc's copy built in {time.monotonic() - started:.0f} s", flush=True)
    corpus_.discard_others(results, keep=folder)
    return folder


def _start_orthanc(folder: Path) -> tuple[_Server, Orthanc]:
    orthanc = start_orthanc(folder, free_port(), free_port(),
                            {"bench": [corpus_.BENCH_AE_TITLE, "127.0.0.1", 104]})
    return _Server("Orthanc", orthanc.dicom_port, orthanc.ae_title, orthanc.stop), orthanc


@dataclass
class _Timing:
    elapsed: float  # ms from findscu's association request to its final response
    first: float  # ms from its association request to its first pending response
    responses: int


def _findscu(findscu: str, server: _Server, query: Query) -> _Timing:
    """One findscu run, timed by its log lines as they arrive (see the module notes)."""
    keys = [item for key, value in query.keys.items()
            for item in ("-k", f"{key}={value}" if value else key)]
    command = [findscu, "-v", "-sr", "-S", "-aet", corpus_.BENCH_AE_TITLE,
               "-aec", server.ae_title, "-k", "QueryRetrieveLevel=STUDY", *keys,
               "127.0.0.1", str(server.port)]
    environment = {**os.environ, "TCP_NODELAY": "1"}
    requested = first = final = 0.0
    responses = 0
    tail: list[bytes] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=environment)
    assert process.stdout is not None
    for line in process.stdout:
        now = time.perf_counter()
        if b"Received Find Response" in line:
            first = first or now
            responses += 1
        elif b"Requesting Association" in line:
            requested = now
        elif b"Received Final Find Response (Success)" in line:
            final = now
        tail = (tail + [line])[-20:]
    process.wait()
    if process.returncode != 0 or not requested or not final:
        raise RuntimeError(f"findscu to {server.name} failed ({process.returncode}): "
                           f"{b''.join(tail).decode(errors='replace')}")
    return _Timing((final - requested) * 1000, ((first or final) - requested) * 1000, responses)


def _answers(server: _Server, query: Query) -> set[tuple[Any, ...]]:
    """One query over pynetdicom: each match's returned values, normalized to compare."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for key, value in query.keys.items():
        setattr(ds, key, value)
    ae = AE(ae_title=corpus_.BENCH_AE_TITLE)
    ae.add_requested_context(STUDY_ROOT)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"no association with {server.name}")
    try:
        responses = list(assoc.send_c_find(ds, STUDY_ROOT))
    finally:
        assoc.release()
    final = responses[-1][0] if responses else None
    if final is None or final.Status != 0x0000:
        raise RuntimeError(f"{query.name}: {server.name} ended with "
                           f"{'no status' if final is None else hex(final.Status)}")
    rows = set()
    for _, identifier in responses[:-1]:
        row = []
        for key in RETURN_KEYS:
            element = identifier[key] if key in identifier else None
            value = "" if element is None or element.value is None else element.value
            if element is not None and element.VM > 1:
                row.append(tuple(sorted(str(item) for item in value)))
            else:
                row.append(str(value).strip())
        rows.add(tuple(row))
    return rows


def _verify(servers: list[_Server], queries: list[Query]) -> dict[str, int]:
    """Every server returns the same studies with the same values; the match counts."""
    counts = {}
    for query in queries:
        found = {server.name: _answers(server, query) for server in servers}
        reference = found["Orthanc"]
        for name, rows in found.items():
            if rows != reference:
                missing, extra = sorted(reference - rows)[:2], sorted(rows - reference)[:2]
                raise RuntimeError(f"{query.name}: {name} returns {len(rows)} studies, "
                                   f"Orthanc {len(reference)}; only Orthanc: {missing}; "
                                   f"only {name}: {extra}")
        counts[query.name] = len(reference)
    return counts


def _measure(findscu: str, servers: list[_Server], queries: list[Query], rounds: int,
             warmup: int, counts: dict[str, int]) -> dict[tuple[str, str], list[_Timing]]:
    samples: dict[tuple[str, str], list[_Timing]] = {
        (query.name, server.name): [] for query in queries for server in servers}
    for index in range(warmup + rounds):
        order = servers[index % len(servers):] + servers[:index % len(servers)]
        for query in queries:
            for server in order:
                timing = _findscu(findscu, server, query)
                if timing.responses != counts[query.name]:
                    raise RuntimeError(f"{query.name}: {server.name} sent {timing.responses} "
                                       f"responses, expected {counts[query.name]}")
                if index >= warmup:
                    samples[query.name, server.name].append(timing)
    return samples


def _report(corpus: corpus_.Corpus, names: list[str], queries: list[Query],
            counts: dict[str, int], samples: dict[tuple[str, str], list[_Timing]],
            rounds: int, warmup: int) -> bool:
    def median(query: str, server: str, what: str) -> float:
        return statistics.median(getattr(t, what) for t in samples[query, server])

    ours = [name for name in names if name != "Orthanc"]
    print(f"query: {len(corpus.studies)} studies / {corpus.instance_count} instances / "
          f"{len(corpus.patients)} patients, DCMTK findscu at STUDY level (Study Root, "
          f"{len(RETURN_KEYS)} return keys), median of {rounds} interleaved rounds "
          f"after {warmup} warm-up")
    print("| query | matches | " + " | ".join(f"{name} ms" for name in names) + " | "
          + " | ".join(f"{name}/Orthanc" for name in ours) + " |")
    print("| --- | ---: |" + " ---: |" * (len(names) + len(ours)))
    universal = queries[-1].name
    rows: list[tuple[str, str, Callable[[str], float]]] = [
        (query.name, str(counts[query.name]),
         lambda server, q=query.name: median(q, server, "elapsed")) for query in queries]
    rows.append((f"{universal}: first result", "1",
                 lambda server: median(universal, server, "first")))
    for label, matches, value in rows:
        print(f"| {label} | {matches} | " + " | ".join(f"{value(n):.1f}" for n in names)
              + " | " + " | ".join(f"{value(n) / value('Orthanc'):.2f}x" for n in ours) + " |")
    rate = {name: counts[universal] / (median(universal, name, "elapsed") / 1000)
            for name in names}
    print(f"| {universal}: results/s | {counts[universal]} | "
          + " | ".join(f"{rate[n]:.0f}" for n in names) + " | "
          + " | ".join(f"{rate[n] / rate['Orthanc']:.2f}x" for n in ours) + " |")
    missed = False
    for name in ours:
        for query in queries[:-1]:
            ratio = median(query.name, name, "elapsed") / median(query.name, "Orthanc", "elapsed")
            missed |= ratio > LATENCY_TARGET
            print(f"latency ours/Orthanc ({name}, {query.name}) = {ratio:.2f}x "
                  f"(target <= {LATENCY_TARGET:.2f}x)")
        ratio = rate[name] / rate["Orthanc"]
        missed |= ratio < RATE_TARGET
        print(f"universal results/s ours/Orthanc ({name}) = {ratio:.2f}x "
              f"(target >= {RATE_TARGET:.2f}x)")
        share = median(universal, name, "first") / median(universal, name, "elapsed")
        theirs = median(universal, "Orthanc", "first") / median(universal, "Orthanc", "elapsed")
        missed |= share > STREAM_TARGET
        print(f"universal first result / whole query ({name}) = {share:.2f} "
              f"(target <= {STREAM_TARGET:.2f}); Orthanc {theirs:.2f}")
    return missed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench query")
    parser.add_argument("--studies", type=int, default=10000)
    parser.add_argument("--per-study", type=int, default=10, help="instances per study")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench-results",
                        help="where Orthanc's copy of the corpus is kept")
    parser.add_argument("--rebuild", action="store_true", help="rebuild Orthanc's copy")
    args = parser.parse_args(argv)
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    findscu = _dcmtk("findscu")
    corpus = corpus_.make_corpus(args.studies, args.per_study)
    queries = _queries(corpus)
    args.results.mkdir(parents=True, exist_ok=True)
    folder = _orthanc_folder(corpus, args.results, args.rebuild)
    work = Path(tempfile.mkdtemp(prefix="bench-query-"))
    servers: list[_Server] = []
    try:
        urls = {"sqlite": f"sqlite:///{work / 'sqlite' / 'gateway.sqlite3'}"}
        if "postgresql" in databases:
            urls["postgresql"] = postgresql_bench_url()
        counts = {}
        for name in databases:
            started = time.monotonic()
            counts[name] = prepare(urls[name], corpus)
            print(f"{name}: {counts[name]} loaded in {time.monotonic() - started:.1f} s",
                  flush=True)
        server, orthanc = _start_orthanc(folder)
        servers.append(server)
        for name in databases:
            corpus_.check_same(counts[name], orthanc.get("/statistics"))
        for name in databases:
            label = "ours SQLite" if name == "sqlite" else "ours PostgreSQL"
            servers.append(_start_ours(label, work / name, urls[name],
                                       max(10000, len(corpus.studies))))
        matches = _verify(servers, queries)
        samples = _measure(findscu, servers, queries, args.rounds, args.warmup, matches)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    missed = _report(corpus, [server.name for server in servers], queries, matches, samples,
                     args.rounds, args.warmup)
    return 1 if missed else 0

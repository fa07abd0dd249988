"""The privacy engine on small frames: detection, consistent pseudonyms, residual gate, undeclared PII."""

from datetime import date

import pandas as pd
import pytest

import pipelines.privacy.classify as classify
import pipelines.privacy.deidentify as deid
import pipelines.privacy.free_text as free_text
import pipelines.privacy.suppression as suppression
from pipelines.contracts import Contract, load_contracts
from pipelines.privacy.analyzer import NLP_PROCESSES_ENV
from pipelines.privacy.classify import UndeclaredPIIError, classify_frame
from pipelines.privacy.keys import SecretKey, fingerprint
from pipelines.privacy.known import KnownIdentifiers
from pipelines.privacy.operators import OperatorContext, pseudonym
from pipelines.resources import CONTRACTS_DIR

SECRET = b"s" * 32
CTX = OperatorContext(SecretKey(fingerprint(SECRET), "test", SECRET), date(2026, 1, 31), CONTRACTS_DIR / "hierarchies")


def contract(dataset: str) -> Contract:
    return next(c for c in load_contracts() if c.dataset == dataset)


def claims(memos: list[str], merchant: str = "Acme Supplies") -> pd.DataFrame:
    n = len(memos)
    return pd.DataFrame(
        {
            "claim_id": [f"CLM-{i:07d}" for i in range(n)],
            "employee_id": ["E0000001"] * n,
            "card_number": ["4111111111111111"] * n,
            "iban": ["DE89370400440532013000"] * n,
            "amount": [10.0] * n,
            "currency": ["EUR"] * n,
            "merchant": [merchant] * n,
            "claim_date": pd.to_datetime(["2025-03-02"] * n),
            "memo": memos,
        }
    )


def finance_contract_k1() -> Contract:
    c = contract("finance_expense_claims")
    return c.model_copy(update={"privacy": c.privacy.model_copy(update={"k_anonymity": 1})})


def test_known_names_found_in_text_and_pseudonymized_like_columns():
    known = KnownIdentifiers()
    known.add("PERSON", ["Quentin Zabrowski"])  # a name NER alone may not know
    known.add("EMAIL_ADDRESS", ["q.zabrowski@example-corp.com"])
    out = deid.deidentify_frame(
        claims(["Dinner with Quentin Zabrowski (q.zabrowski@example-corp.com) and team"]),
        finance_contract_k1(),
        CTX,
        known=known,
    )
    memo = out.frame["memo"][0]
    assert "Zabrowski" not in memo and "q.zabrowski" not in memo
    # the same person gets the same pseudonym in free text as the pseudonymize operator gives in a column
    assert pseudonym(SECRET, "PERSON", "Quentin Zabrowski") in memo
    assert pseudonym(SECRET, "EMAIL_ADDRESS", "Q.Zabrowski@example-corp.com") in memo
    memo_record = next(c for c in out.columns if c.column == "memo")
    assert memo_record.entities_detected["PERSON"] >= 1 and memo_record.params["key_id"] == CTX.pseudonym_key.key_id


@pytest.mark.parametrize(
    "text, absent",
    [
        ("Call me back at (415) 555-0142 please", "555-0142"),
        ("Refund to card 4111 1111 1111 1111", "4111 1111"),
        ("SSN on file is 219-09-9999", "219-09-9999"),
        ("Login from 203.0.113.7 flagged", "203.0.113.7"),
        ("Mail sarah.connor@gmail.com today", "sarah.connor@gmail.com"),
    ],
)
def test_presidio_masks_free_text_entities(text, absent):
    out = deid.deidentify_frame(claims([text]), finance_contract_k1(), CTX, known=KnownIdentifiers())
    assert absent not in out.frame["memo"][0]


def test_residual_hits_block_and_name_column_not_value(monkeypatch):
    monkeypatch.setattr(free_text, "RESCAN_PASSES", 0)  # whatever the first look finds counts as left over
    known = KnownIdentifiers()
    known.add("PERSON", ["Quentin Zabrowski"])
    with pytest.raises(deid.ResidualPIIError) as err:
        deid.deidentify_frame(claims(["Lunch with Quentin Zabrowski"]), finance_contract_k1(), CTX, known=known)
    assert "column 'memo'" in str(err.value) and "PERSON" in str(err.value) and "Zabrowski" not in str(err.value)


def test_residual_in_structured_column():
    known = KnownIdentifiers()
    known.add("EMAIL_ADDRESS", ["jane.doe@example-corp.com"])
    assert deid.residual_in_structured(pd.Series(["x", "Jane.Doe@example-corp.com"]), known) == {"EMAIL_ADDRESS": 1}


def test_undeclared_pii_column_is_caught_without_its_values():
    frame = claims(["ok"] * 50)
    frame["merchant"] = [f"user{i}.name{i}@gmail.com" for i in range(50)]  # emails where merchants belong
    with pytest.raises(UndeclaredPIIError) as err:
        classify_frame(frame, contract("finance_expense_claims"), known=None, model_name=None)
    message = str(err.value)
    assert "finance_expense_claims" in message and "'merchant'" in message and "EMAIL_ADDRESS" in message
    assert "@gmail.com" not in message


def test_known_identifier_of_another_department_is_undeclared_pii():
    known = KnownIdentifiers()
    known.add("EMPLOYEE_ID", [f"E{i:07d}" for i in range(100)])
    frame = claims(["ok"] * 40)
    frame["merchant"] = [f"E{i:07d}" for i in range(40)]
    with pytest.raises(UndeclaredPIIError, match="EMPLOYEE_ID"):
        classify_frame(frame, contract("finance_expense_claims"), known=known, model_name=None)


def test_clean_columns_pass_classification():
    results = classify_frame(
        claims(["ok"] * 5), contract("finance_expense_claims"), known=KnownIdentifiers(), model_name=None
    )
    assert {r.column for r in results} >= {"merchant", "currency", "claim_id"}
    assert not any(r.undeclared for r in results)


def _hr_published(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["date_of_birth", "gender", "job_title", "org_unit"]).assign(salary="x")


def test_k_enforced_by_suppressing_small_classes():
    frame = _hr_published([("20-39", "F", "data", "A")] * 30 + [("40-59", "M", "hr", "B")] * 2)
    out, suppressed, params = suppression.enforce_k_anonymity(frame, contract("hr_employees"))
    assert suppressed == 2 and len(out) == 30 and params["blanked"] == []


def test_adaptive_blanking_picks_the_quasi_identifier_that_loses_least():
    # gender splits each age band into groups of 3 and 2; blanking gender (1 bit) loses less than blanking
    # the age band (2 bits), and either alone restores k=5 with nothing suppressed
    rows = [(band, g, "data", "A") for band in ("0-19", "20-39", "40-59", "60-79") for g in "FFFMM"]
    out, suppressed, params = suppression.enforce_k_anonymity(_hr_published(rows), contract("hr_employees"))
    assert params["blanked"] == ["gender"] and suppressed == 0 and set(out["gender"]) == {"*"}


def test_without_adaptive_blanking_the_run_stops_with_advice():
    c = contract("hr_employees")
    c = c.model_copy(update={"privacy": c.privacy.model_copy(update={"adaptive_suppression": False})})
    rows = [(band, g, "data", "A") for band in ("20-39", "40-59") for g in "FMXFMXFMXF"]
    with pytest.raises(deid.PrivacyThresholdError, match="smaller than k=5"):
        suppression.enforce_k_anonymity(_hr_published(rows), c)


def test_classification_sample_ignores_row_order_and_batch_split():
    from pipelines.privacy.classify import _sample

    values = pd.Series([f"CLM-{i:07d}" for i in range(5000)] * 2)
    sample = _sample(values, 200)
    assert len(sample) == len(set(sample)) == 200 and set(sample) <= set(values)
    assert _sample(values.sample(frac=1, random_state=3), 200) == sample
    assert _sample(pd.Series(pd.unique(values)), 200) == sample  # the streaming path passes distinct values
    assert _sample(pd.Series(["b", None, "a", "b"]), 200) == ["a", "b"]


def test_classification_in_a_second_process_gives_the_same_verdicts(monkeypatch):
    monkeypatch.setenv("PIPELINES_NLP_PROCESSES", "2")
    monkeypatch.setattr(classify, "BACKGROUND_MIN_VALUES", 1)
    monkeypatch.setattr(classify, "BACKGROUND_MIN_CELLS", 1)
    frame = claims(["Dinner with Jane Doe"] * 30)
    inline = classify_frame(frame, finance_contract_k1(), known=KnownIdentifiers(), model_name=None)
    table = deid.deidentify_frame(frame, finance_contract_k1(), CTX, known=KnownIdentifiers())
    assert table.classification == [c.to_dict() for c in inline]
    frame["merchant"] = [f"user{i}.name{i}@gmail.com" for i in range(30)]
    with pytest.raises(UndeclaredPIIError, match="'merchant'") as err:
        deid.deidentify_frame(frame, finance_contract_k1(), CTX, known=KnownIdentifiers())
    assert "@gmail.com" not in str(err.value)


def test_shared_classification_adds_up_counts_split_across_units(monkeypatch):
    # 20 emails among 200 merchants, every tenth value in the (sorted) sample: each unit of 25 values holds 2 or 3 of
    # them, so only the sum over all units (20 of 200, the 10% bar) flags the column, whichever process classified each
    merchants = [f"m{i:03d}.name@gmail.com" if i % 10 == 0 else f"m{i:03d} supplies" for i in range(200)]
    frame = claims(["ok"] * 200).assign(merchant=merchants)
    with pytest.raises(UndeclaredPIIError, match=r"EMAIL_ADDRESS in 20 of 200 sampled values"):
        classify_frame(frame, contract("finance_expense_claims"), known=None, model_name=None)
    monkeypatch.setenv(NLP_PROCESSES_ENV, "2")
    monkeypatch.setattr(classify, "BACKGROUND_MIN_VALUES", 1)
    monkeypatch.setattr(classify, "BACKGROUND_MIN_CELLS", 1)
    shared = classify.SharedClassification(
        frame, contract("finance_expense_claims"), known=None, model_name=None, cells=frame.size
    )
    assert len(shared._units) > 8 and shared._next is not None  # a helper shares the units
    with pytest.raises(UndeclaredPIIError, match=r"EMAIL_ADDRESS in 20 of 200 sampled values"):
        shared.result()


def test_columns_that_cannot_be_flagged_are_not_sampled():
    # support's postcode is a quasi-identifier declared as ZIP_CODE: generalized, never undeclared PII
    support = contract("support_tickets")
    assert [c.name for c in classify.columns_to_classify(support)] == ["ticket_id", "product"]
    assert not classify.can_be_flagged(support.column("postcode"))
    assert classify.can_be_flagged(contract("hr_employees").column("job_title"))  # a quasi-identifier without entity


# --- Declared non-personal terms (product names) and the rescan pre-filter ---------------------------------


def _body_spec(terms_from: list[str]):
    body = contract("support_tickets").column("body")
    return body.model_copy(
        update={"deidentify": body.deidentify.model_copy(update={"non_personal_terms_from": terms_from})}
    )


def _scan_bodies(texts: list[str], spec, products: list[str] | None):
    terms = free_text.declared_terms(spec.deidentify, lambda name: pd.Series(products))
    return free_text.scan_text_column(
        pd.Series(texts, dtype=object),
        spec,
        CTX,
        score_threshold=0.4,
        model_name=None,
        known=KnownIdentifiers(),
        terms=terms,
    )


# the pinned model reads the product as a person (ending on a given name, "Max", it is no span of everyday words)
BODIES = [
    "How do I export my data from Cloud Backup Pro Max?",
    "Hi, this is Allen Cole. My Cloud Backup Pro Max stopped syncing after the last update.",
]


def test_declared_product_names_stay_readable_while_names_are_masked():
    out, params, counts, _ = _scan_bodies(BODIES, _body_spec(["product"]), ["Cloud Backup Pro Max", "TeamChat"])
    assert out.tolist()[0] == BODIES[0]
    assert "My Cloud Backup Pro Max stopped syncing" in out[1] and "Allen Cole" not in out[1]
    assert pseudonym(SECRET, "PERSON", "Allen Cole") in out[1]
    assert params["non_personal_terms"] == {"from": ["product"], "distinct_terms": 2, "max_terms": 1000, "used": True}
    undeclared, params, _, _ = _scan_bodies(BODIES, _body_spec([]), None)
    assert "Cloud Backup Pro Max" not in undeclared[0] and "non_personal_terms" not in params  # what the terms prevent


def test_a_column_of_too_many_distinct_values_is_no_vocabulary():
    many = [f"Product {i}" for i in range(1001)]
    out, params, _, _ = _scan_bodies(BODIES, _body_spec(["product"]), many)
    assert params["non_personal_terms"]["used"] is False and params["non_personal_terms"]["distinct_terms"] == 1001
    assert "Allen Cole" not in out[1]


def test_declared_terms_must_be_passed():
    with pytest.raises(ValueError, match="names non-personal terms"):
        free_text.scan_text_column(
            pd.Series(BODIES), _body_spec(["product"]), CTX, score_threshold=0.4, model_name=None
        )


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from bench.data import prepare

    return prepare(tmp_path_factory.mktemp("generated"), 300, 5)


@pytest.mark.parametrize(
    ("dataset", "column", "skips"),
    [
        ("support_tickets", "body", True),
        ("finance_expense_claims", "memo", False),
        ("it_security_incidents", "description", False),
    ],
)
def test_rescans_skip_only_texts_they_could_not_change(generated, monkeypatch, dataset, column, skips):
    """A rescan sends a masked text to the analyzer only if a line is a NER candidate or a digit lies outside our
    tokens; scanning every changed text instead gives the same output."""
    frame = generated.frame(dataset)
    spec = generated.contract(dataset).column(column)
    terms = free_text.declared_terms(spec.deidentify, lambda name: pd.Series(pd.unique(frame[name].dropna())))

    def scan():
        return free_text.scan_text_column(
            frame[column], spec, CTX, score_threshold=0.4, model_name=None, known=generated.known, terms=terms
        )

    monkeypatch.setenv(NLP_PROCESSES_ENV, "1")  # the skips are counted here, not in workers
    skipped = []
    real = free_text._rescan_can_find
    monkeypatch.setattr(free_text, "_rescan_can_find", lambda *a: real(*a) or skipped.append(1) or False)
    filtered = scan()
    assert bool(skipped) is skips  # memos and incident reports keep a candidate ("Team dinner with ...") or a digit
    monkeypatch.setattr(free_text, "_rescan_can_find", lambda *a: True)
    full = scan()
    pd.testing.assert_series_equal(filtered[0], full[0])
    assert filtered[1:] == full[1:]


def test_a_name_keeps_its_pseudonym_when_ner_takes_punctuation_into_the_span():
    text = "Cannot log in to TeamChat; password reset emails never arrive at marissa.chan@gmail.com. - Marissa Chan"
    out, *_ = _scan_bodies([text], _body_spec(["product"]), ["TeamChat"])
    assert out[0].endswith(". - " + pseudonym(SECRET, "PERSON", "Marissa Chan")), out[
        0
    ]  # NER's span was ". - Marissa Chan"


def test_workers_mask_each_text_as_one_process_does(generated, monkeypatch):
    """Many distinct texts are masked in forked workers (scan, mask, rescans per chunk): the same output, counts and
    rescan figures as in one process, and the parent keeps the NER results the workers computed."""
    from pipelines.privacy.analyzer import get_analyzer

    frame = generated.frame("support_tickets")
    spec = generated.contract("support_tickets").column("body")
    terms = free_text.declared_terms(spec.deidentify, lambda name: pd.Series(pd.unique(frame[name].dropna())))
    from pipelines.privacy import analyzer

    monkeypatch.setattr(free_text, "MIN_TEXTS_PER_WORKER", 40)  # 300 bodies: several chunks per worker
    pooled = []
    real_map = analyzer._map_chunks_in_processes
    monkeypatch.setattr(
        analyzer, "_map_chunks_in_processes", lambda fn, *a: pooled.append(fn.__name__) or real_map(fn, *a)
    )

    def scan(processes: str):
        monkeypatch.setenv(NLP_PROCESSES_ENV, processes)
        get_analyzer().nlp_engine.clear_entity_cache()
        out = free_text.scan_text_column(
            frame["body"], spec, CTX, score_threshold=0.4, model_name=None, known=generated.known, terms=terms
        )
        return out, get_analyzer().nlp_engine.entity_mark()[1]

    (alone, cached_alone), (parallel, cached_parallel) = scan("1"), scan("2")
    pd.testing.assert_series_equal(alone[0], parallel[0])
    assert alone[1:] == parallel[1:]
    assert cached_parallel == cached_alone > 0
    assert pooled == ["_mask_chunk_in_worker"]  # one pool for the whole column; none in one process

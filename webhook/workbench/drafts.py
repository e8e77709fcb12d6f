"""Check a draft: YAML pasted or edited in the page is validated and tested without being saved.

The text is loaded as if it were `rules/<ruleset>/<its version>.yaml`, so the draft sees what the real file would
(its sibling tests file, the FHIR bundles its tests name, the site mapping). Every error is shown at its line in
the text. Once the schema passes, the decision tables are drawn even if later checks fail, so a gap or an overlap
is seen where it is.

The whole check (parsing, checks, charts and tests) runs in the workbench's sandbox child, within its time limit:
a draft is untrusted text, and nothing of it runs in the worker that answers the EHR.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from flask import jsonify, render_template, request
from markupsafe import Markup

from engine.document import Document, read_document, schema_errors
from engine.errors import EvaluationError, RulesetError, RulesetErrors
from engine.loader import RULESET_SCHEMA, build_ruleset, load_ruleset
from engine.model import Ruleset
from engine.runtime import Engine
from engine.sandbox import child_engine
from engine.testing import CaseResult, run_tests
from engine.versions import is_version
from store import SavedDraft
from webhook.outcome import HookError, operation_outcome
from webhook.request import load_json
from webhook.workbench import svg
from webhook.workbench.amend import FormFields, form_fields
from webhook.workbench.context import VersionInfo
from webhook.workbench.saved import find_saved
from webhook.workbench.views import chosen_version, sandbox, snapshot, workbench

DRAFT_NAME = "draft"  # the file stem when the text names no usable version


@dataclass
class Line:
    number: int
    text: str
    errors: list[RulesetError] = field(default_factory=list)


@dataclass
class DraftCheck:
    path: Path
    errors: list[RulesetError]  # in the draft's text
    other_errors: list[RulesetError]  # in other files it uses (its tests file)
    ruleset: Ruleset | None
    results: list[CaseResult]
    charts: dict[str, Markup]
    test_problem: str = ""
    tests_run: bool = True  # False for the editor's checks as one types: the tests run on "Validate and test"

    @property
    def ok(self) -> bool:
        return not self.errors and not self.other_errors and not self.test_problem and self.tests_run and all(
            r.passed for r in self.results)

    def lines(self, text: str) -> list[Line]:
        found = [Line(i, line) for i, line in enumerate(text.splitlines() or [""], start=1)]
        for error in self.errors:
            if 1 <= error.line <= len(found):
                found[error.line - 1].errors.append(error)
        return found

    def excerpt(self, text: str, radius: int = 3) -> list[Line | None]:
        """The lines around each problem (None marks lines left out), so a long file shows where it matters."""
        lines = self.lines(text)
        keep = {n for line in lines if line.errors for n in range(line.number - radius, line.number + radius + 1)}
        found: list[Line | None] = []
        for line in lines:
            if line.number in keep:
                found.append(line)
            elif found and found[-1] is not None:
                found.append(None)
        return found

    def unplaced(self, text: str) -> list[RulesetError]:
        count = len(text.splitlines() or [""])
        return [e for e in self.errors if not 1 <= e.line <= count]

    def as_dict(self) -> dict:
        return {"file": str(self.path), "ok": self.ok,
                "errors": [e.as_dict() for e in self.errors + self.other_errors],
                "tests": [{"name": r.name, "passed": r.passed, "differences": r.differences} for r in self.results],
                "test_problem": self.test_problem, "tests_run": self.tests_run}


def draft_path(rules_dir: Path, ruleset_id: str, text: str) -> Path:
    """Where the text would live: its ruleset's folder, named by its version when that is a semantic version."""
    try:
        data = read_document(DRAFT_NAME, text).data
    except RulesetErrors:
        data = None
    version = str(data.get("version", "")) if isinstance(data, dict) else ""
    return rules_dir / ruleset_id / f"{version if is_version(version) else DRAFT_NAME}.yaml"


def check_in_child(text: str, ruleset_id: str, rules_dir: Path, with_tests: bool = True) -> DraftCheck:
    """check_draft, as the sandbox's child runs it (with the child's engine), as the caller is shown it."""
    path = rules_dir / ruleset_id / f"{DRAFT_NAME}.yaml"
    try:
        path = draft_path(rules_dir, ruleset_id, text)
        check = check_draft(text, path, rules_dir, child_engine(), with_tests)
    except Exception as exc:  # a draft must never take the page down; say what happened instead
        check = not_checked(path, f"the draft could not be checked: {type(exc).__name__}: {exc}")
    return as_shown(check, rules_dir)


def as_shown(check: DraftCheck, rules_dir: Path) -> DraftCheck:
    """The check with the rules folder's absolute path taken out of every file name and message: the caller sees
    `<ruleset>/1.1.0.yaml`, not where the server keeps its files."""
    roots = sorted({f"{rules_dir.resolve()}{os.sep}", f"{rules_dir.absolute()}{os.sep}"}, key=len, reverse=True)

    def shown(text: str) -> str:
        for root in roots:
            text = text.replace(root, "")
        return text

    def error(e: RulesetError) -> RulesetError:
        return dataclasses.replace(e, file=shown(e.file), message=shown(e.message))

    for result in check.results:
        result.differences = [shown(d) for d in result.differences]
    return dataclasses.replace(check, path=Path(shown(str(check.path))), errors=[error(e) for e in check.errors],
                               other_errors=[error(e) for e in check.other_errors],
                               test_problem=shown(check.test_problem))


def not_checked(path: Path, reason: str) -> DraftCheck:
    return DraftCheck(path, [RulesetError(str(path), 0, 0, (), reason)], [], None, [], {})


def check_draft(text: str, path: Path, rules_dir: Path, engine: Engine, with_tests: bool = True) -> DraftCheck:
    """Validate the text as the file at `path`; if it loads (and `with_tests`), run its tests."""
    errors: list[RulesetError] = []
    ruleset = None
    try:
        ruleset = load_ruleset(path, text)
    except RulesetErrors as exc:
        errors = exc.errors
    mine = [e for e in errors if e.file == str(path)]
    others = [e for e in errors if e.file != str(path)]
    check = DraftCheck(path, sorted(mine, key=lambda e: (e.line, e.column)), others, ruleset, [],
                       _charts(path, text))
    if ruleset is not None:
        check.errors += outside_files(ruleset, path, rules_dir, text)
    check.tests_run = with_tests and ruleset is not None and not check.errors
    if check.tests_run:
        try:
            check.results = run_tests(ruleset, engine)
        except Exception as exc:  # a draft must never take the page down; say what happened instead
            check.test_problem = f"the tests could not be run: {type(exc).__name__}: {exc}"
    return check


def outside_files(ruleset: Ruleset, path: Path, rules_dir: Path, text: str) -> list[RulesetError]:
    """Tests may only name bundles inside the rules directory: a draft must not read other files."""
    doc: Document = read_document(path, text)
    root = rules_dir.resolve()
    errors = []
    for index, case in enumerate((doc.data or {}).get("tests", []) or []):
        for key in ("fhir", "draft_orders"):
            if isinstance(case, dict) and key in case:
                target = (path.parent / str(case[key])).resolve()
                if root not in target.parents:
                    errors.append(doc.error(("tests", index, key),
                                            f"'{case[key]}' is outside the rules directory; name a bundle in the "
                                            "ruleset's folder"))
    return errors


def _charts(path: Path, text: str) -> dict[str, Markup]:
    """The tables drawn from a document that passed the schema, even when semantic checks fail."""
    try:
        doc = read_document(path, text)
        if schema_errors(doc, RULESET_SCHEMA):
            return {}
        ruleset = build_ruleset(doc)
        return {name: svg.table_chart(table, ruleset) for name, table in ruleset.tables.items()}
    except Exception:  # best effort: a picture is a help, not a verdict
        return {}


def _folders() -> list[str]:
    return list(snapshot().versions)


def _run(text: str, ruleset_id: str, with_tests: bool = True) -> DraftCheck:
    rules_dir = workbench().rules_dir
    folders = _folders()
    if ruleset_id not in folders:
        ruleset_id = folders[0] if folders else "draft"
    # The child keeps the draft's version once its tests have run, as it keeps every version it evaluates.
    version = "draft " + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        return sandbox().run(check_in_child, text, ruleset_id, rules_dir, with_tests, doing="checking the draft",
                             version=version)
    except EvaluationError as error:
        return as_shown(not_checked(rules_dir / ruleset_id / f"{DRAFT_NAME}.yaml", str(error)), rules_dir)


def check() -> str:
    if request.method == "POST":
        text, ruleset_id = request.form.get("text", ""), request.form.get("ruleset", "")
        return render_check(text, ruleset_id, result=_run(text, ruleset_id), base=request.form.get("base") or None)
    saved = find_saved(request.args.get("draft"))
    if saved is not None:
        return render_check(saved.text, saved.ruleset, saved=saved, just_saved=request.args.get("saved"))
    start = chosen_version(request.args.get("from"))
    text = start.ruleset.source_text if start else ""
    return render_check(text, start.ruleset_id if start else "", start=start, base=start.ref if start else None)


def render_check(text: str, ruleset_id: str, result: DraftCheck | None = None, start: VersionInfo | None = None,
                 base: str | None = None, saved: SavedDraft | None = None, just_saved: str | None = None,
                 save_problem: str = "") -> str:
    """The check page: the editor, the amendment form of the text's parameters and rows, the save form and, after
    "Validate and test", the result; the posted draft's problems go to the editor to be marked as it opens."""
    problems = [e.as_dict() for e in result.errors] if result else []
    return render_template("check.html", text=text, ruleset_id=ruleset_id, folders=_folders(), result=result,
                           start=start, base=base, saved=saved, just_saved=just_saved, save_problem=save_problem,
                           problems=problems, fields=_fields(text))


def _fields(text: str) -> FormFields:
    if not text.strip():
        return FormFields(problem="no text yet")
    try:
        return sandbox().run(form_fields, text, doing="reading the draft's parameters")
    except EvaluationError as error:
        return FormFields(problem=str(error))


def check_json():
    """The same check for a script: body {"text": ..., "ruleset": ...}; answers errors and test results. With
    `"tests": false` only the checks run (the editor asks so as one types: the tests, the slow part, wait for
    "Validate and test"). A body that is not such an object (or nests too deep) is a 400 with an OperationOutcome,
    as the hooks answer."""
    try:
        body = load_json(request.get_data(cache=False))
    except HookError as error:
        return jsonify(operation_outcome(error.code, error.diagnostics)), error.status
    if not isinstance(body, dict):
        shape = 'The body must be a JSON object: {"text": ..., "ruleset": ...}.'
        return jsonify(operation_outcome("invalid", shape)), 400
    result = _run(str(body.get("text", "")), str(body.get("ruleset", "")), body.get("tests", True) is not False)
    return jsonify(result.as_dict())

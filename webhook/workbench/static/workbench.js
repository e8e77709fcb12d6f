// The workbench's little JavaScript: jump to an error's line in the editor, keep Tab in the editor, show what a
// suggestion would send, refresh a form's choices when its version changes, and send the check page's amendment
// form to the server, which rewrites the draft's text. Nothing is fetched from elsewhere. On the check page
// vendor/editor.js (CodeMirror) takes the textarea's place when it runs.
"use strict";

function selectLine(textarea, line) {
  const lines = textarea.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
  const end = start + (lines[line - 1] || "").length;
  textarea.focus();
  textarea.setSelectionRange(start, end);
  const lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 16;
  textarea.scrollTop = Math.max(0, (line - 5) * lineHeight);
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-line]");
  const editor = document.getElementById("draft-text");
  if (link && editor && !editor.hidden) {  // hidden: the editor (vendor/editor.js) runs and jumps itself
    selectLine(editor, Number(link.dataset.line));
  }
  const button = event.target.closest("button[data-suggestion]");
  if (button) {
    const shown = button.getAttribute("aria-expanded") === "true";
    button.setAttribute("aria-expanded", String(!shown));
    button.classList.toggle("accepted", !shown);
    const resource = document.querySelector(`pre[data-for="${button.dataset.suggestion}"]`);
    if (resource) resource.hidden = shown;
  }
});

document.addEventListener("keydown", (event) => {
  const editor = event.target;
  if (event.key === "Tab" && editor.id === "draft-text" && !event.shiftKey) {
    event.preventDefault();
    const { selectionStart: start, selectionEnd: end } = editor;
    editor.setRangeText("  ", start, end, "end");
  }
});

document.addEventListener("change", (event) => {
  const select = event.target.closest("select[data-refresh]");
  if (select && select.form) {
    const run = select.form.querySelector("input[name=run]");
    if (run) run.value = "";
    select.form.submit();
  }
});

// --- the check page's amendment form ---------------------------------------------------------------------------------

function editOf(field) {
  const raw = field.value.trim();
  const value = field.dataset.type === "number" && raw !== "" && !Number.isNaN(Number(raw)) ? Number(raw)
    : field.dataset.type === "boolean" ? raw === "true" : raw;
  if (field.dataset.edit === "parameter") return { kind: "parameter", name: field.dataset.name, value };
  const edit = { kind: "row", table: field.dataset.table, row: Number(field.dataset.row) };
  if (field.dataset.field === "band") edit.band = raw;
  else {
    edit.output = value;
    edit.output_param = field.dataset.param === "1";
  }
  return edit;
}

// The new text in the draft's field, and in the editor when it runs (it listens for this event).
function replaceDraft(text) {
  const textarea = document.getElementById("draft-text");
  textarea.value = text;
  textarea.dispatchEvent(new CustomEvent("cdsrules:replace", { detail: { text } }));
}

function showProposal(proposal) {
  const shown = document.getElementById("proposal");
  const version = document.getElementById("save-version");
  if (!proposal) {
    shown.textContent = "No version proposed: the text needs a released version to compare with.";
    return;
  }
  shown.textContent = `Proposed version ${proposal.version} (${proposal.reason}).`;
  shown.dataset.version = proposal.version;
  if (version) version.value = proposal.version;
}

async function amend(field) {
  const form = document.getElementById("draft-form");
  const status = document.getElementById("amend-status");
  const diff = document.getElementById("amend-diff");
  status.textContent = "Rewriting the text…";
  status.dataset.state = "";
  const response = await fetch(document.getElementById("amend-form").dataset.amendUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ text: form.elements.text.value, ruleset: form.elements.ruleset.value,
      base: form.elements.base.value, edit: editOf(field) }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const issue = (answer.issue || [])[0] || {};
    status.textContent = `Not changed: ${issue.diagnostics || `the server answered ${response.status}`}`;
    status.dataset.state = "bad";
    return;
  }
  replaceDraft(answer.text);
  diff.textContent = answer.diff || "(no change)";
  diff.hidden = false;
  showProposal(answer.proposal);
  status.textContent = "The text was rewritten; the check runs on it.";
  status.dataset.state = "good";
}

document.addEventListener("change", (event) => {
  const field = event.target.closest("#amend-form [data-edit]");
  if (field) amend(field).catch((error) => {
    const status = document.getElementById("amend-status");
    status.textContent = `Not changed: ${error.message}.`;
    status.dataset.state = "bad";
  });
});

document.addEventListener("submit", (event) => {  // Enter in a field of the amendment form: that field's edit
  if (event.target.id === "amend-form") {
    event.preventDefault();
    if (document.activeElement && document.activeElement.dataset.edit) document.activeElement.blur();
  }
});

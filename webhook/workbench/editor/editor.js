// The draft editor of the check page: CodeMirror 6 over the page's textarea, which stays the form's field.
// Line numbers, YAML highlighting, folding, and the checker's errors at their line as the text is typed: the text
// is sent to /workbench/check.json a moment after the last keystroke, one check at a time, for the checks only (its
// tests run on "Validate and test"). A draft posted with the page has its problems marked as it opens (the page puts
// them in the textarea's data-problems), and the page's other scripts replace the text by a "cdsrules:replace" event
// on the textarea (the amendment form does, with the text the server rewrote).
// Built into ../static/vendor/editor.js by `make editor`; the page works without it (the plain textarea).
import { basicSetup } from "codemirror";
import { EditorView, keymap } from "@codemirror/view";
import { EditorState } from "@codemirror/state";
import { indentWithTab } from "@codemirror/commands";
import { yaml } from "@codemirror/lang-yaml";
import { linter, lintGutter } from "@codemirror/lint";

const DELAY_MS = 400;
const RETRY_MS = 1500;
// The style elements CodeMirror adds carry the nonce the page's policy allows them by (read from this script's own
// element, where the server put it; the attribute is hidden from the page once loaded).
const NONCE = (document.currentScript && document.currentScript.nonce) || "";

function position(doc, line, column) {
  const at = doc.line(Math.min(Math.max(line, 1), doc.lines));
  return Math.min(at.from + Math.max(column - 1, 0), at.to);
}

function diagnostics(doc, errors) {
  return errors.map((error) => {
    if (!error.line) {
      return { from: 0, to: Math.min(doc.line(1).to, doc.length), severity: "error", message: error.message };
    }
    const at = doc.line(Math.min(error.line, doc.lines));
    const from = error.column ? position(doc, error.line, error.column) : at.from;
    // From the column to the line's end (at least one character), so the underline covers the value.
    return { from, to: Math.max(at.to, Math.min(from + 1, doc.length)), severity: "error", message: error.message };
  });
}

function checker(form, status, initial, problems) {
  const url = form.dataset.checkUrl;
  let running = Promise.resolve();
  let last = [];

  async function ask(text, ruleset) {
    for (;;) {
      const response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, ruleset, tests: false }),
        credentials: "same-origin",
      });
      if (response.status === 503) {  // another check in this server process: wait for it
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
        continue;
      }
      if (!response.ok) throw new Error(`the check answered ${response.status}`);
      return response.json();
    }
  }

  return async (view) => {
    const text = view.state.doc.toString();
    // The text as the page came: the problems the page was sent with, no check (it would hold this server
    // process's sandbox while the pharmacist may be on to another page).
    if (text === initial) {
      status.textContent = "";
      return diagnostics(view.state.doc, problems);
    }
    const ruleset = form.elements.ruleset ? form.elements.ruleset.value : "";
    const turn = running.then(async () => {
      if (view.state.doc.toString() !== text) return last;  // typed on meanwhile: a later check follows
      status.textContent = "Checking…";
      try {
        const answer = await ask(text, ruleset);
        // Errors in the draft itself; those in its tests file have that file's lines.
        const errors = (answer.errors || []).filter((e) => e.file === answer.file);
        last = diagnostics(view.state.doc.toString() === text ? view.state.doc : EditorState.create({ doc: text }).doc,
          errors);
        status.textContent = errors.length
          ? `${errors.length} problem${errors.length === 1 ? "" : "s"} in the text.`
          : (answer.ok ? "No problems; its tests pass." : "No problems in the text; press “Validate and test” for the tests.");
        status.dataset.state = errors.length ? "bad" : "good";
      } catch (error) {
        status.textContent = `Not checked: ${error.message}.`;
        status.dataset.state = "";
      }
      return last;
    });
    running = turn.catch(() => undefined);
    return turn;
  };
}

function postedProblems(textarea) {
  try {
    return JSON.parse(textarea.dataset.problems || "[]");
  } catch (error) {
    return [];
  }
}

// The smallest change from the editor's text to `text`, so the cursor and scroll stay where they were.
function replacement(doc, text) {
  const old = doc.toString();
  let from = 0;
  while (from < old.length && from < text.length && old[from] === text[from]) from += 1;
  let end = 0;
  while (end < old.length - from && end < text.length - from && old[old.length - 1 - end] === text[text.length - 1 - end]) end += 1;
  return { from, to: old.length - end, insert: text.slice(from, text.length - end) };
}

function start() {
  const textarea = document.getElementById("draft-text");
  const form = textarea && textarea.form;
  if (!form) return;
  const status = document.createElement("p");
  status.id = "editor-status";
  status.className = "editor-status muted";
  status.setAttribute("role", "status");
  const view = new EditorView({
    parent: textarea.parentNode,
    state: EditorState.create({
      doc: textarea.value,
      extensions: [
        basicSetup,
        keymap.of([indentWithTab]),
        yaml(),
        lintGutter(),
        linter(checker(form, status, textarea.value, postedProblems(textarea)), { delay: DELAY_MS }),
        EditorView.cspNonce.of(NONCE),
        EditorView.contentAttributes.of({ "aria-label": textarea.getAttribute("aria-label") || "Ruleset YAML" }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) textarea.value = update.state.doc.toString();
        }),
      ],
    }),
  });
  textarea.parentNode.insertBefore(view.dom, textarea);
  view.dom.after(status);
  view.dom.id = "draft-editor";
  textarea.hidden = true;
  textarea.dataset.editor = "codemirror";
  textarea.addEventListener("cdsrules:replace", (event) => {
    view.dispatch({ changes: replacement(view.state.doc, event.detail.text) });
  });

  document.addEventListener("click", (event) => {  // "line 12" in the problems list: there, in the editor
    const link = event.target.closest("a[data-line]");
    if (!link) return;
    event.preventDefault();
    const line = view.state.doc.line(Math.min(Math.max(Number(link.dataset.line), 1), view.state.doc.lines));
    view.dispatch({ selection: { anchor: line.from, head: line.to }, effects: EditorView.scrollIntoView(line.from, { y: "center" }) });
    view.focus();
  });
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}

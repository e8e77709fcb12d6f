// The workbench's little JavaScript: jump to an error's line in the editor, keep Tab in the editor, show what a
// suggestion would send, and refresh a form's choices when its version changes. Nothing is fetched. On the check page
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

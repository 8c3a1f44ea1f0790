// keygate's pages work without this script. It only adds conveniences:
// copy buttons (data-copy="#selector") and a check that a pasted key's shape matches
// the chosen provider before the form is sent (the server checks again).
"use strict";
// A sign-in link's landing page: the token leaves the address bar and the history.
if (document.documentElement.hasAttribute("data-drop-query") && window.history && history.replaceState) {
  history.replaceState(null, "", location.pathname);
}
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.getAttribute("data-copy"));
  if (!source) return;
  const text = source.value || source.textContent;
  const done = () => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => { source.select(); });
  } else {
    source.select();
    try { document.execCommand("copy"); done(); } catch (_) { /* the text stays selected */ }
  }
});

// Progressive enhancement only: every page works without this file.
// 1. A form is sent once: its submit button is disabled while the next page loads (slow links).
// 2. A form with data-confirm asks before it acts (withdrawing a consent).
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  // after the form's data is taken: a button disabled now would drop its own name=value from it
  var buttons = form.querySelectorAll("button[type=submit]");
  window.setTimeout(function () {
    for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = true; }
  }, 0);
});
// 3. Back from the browser's page cache: the buttons work again.
window.addEventListener("pageshow", function () {
  var buttons = document.querySelectorAll("button[disabled]");
  for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = false; }
});
// 4. A button with data-print prints the page (the terminal's receipt; print CSS hides the rest).
document.addEventListener("click", function (event) {
  if (event.target.closest && event.target.closest("[data-print]")) { window.print(); }
});

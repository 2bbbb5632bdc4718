// Progressive enhancement only: every page works without it.
// - A form with data-validate checks its JSON document before sending it.
// - A form with data-confirm asks first.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) {
    event.preventDefault();
    return;
  }
  if (!form.hasAttribute("data-validate")) return;
  var area = form.querySelector("textarea[data-json]");
  var shown = document.getElementById("document-error");
  if (!area || !shown) return;
  var problem = "";
  try {
    var value = JSON.parse(area.value);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      problem = "The document must be a JSON object ({...}).";
    }
  } catch (error) {
    problem = "The document is not valid JSON: " + error.message;
  }
  if (problem) {
    event.preventDefault();
    shown.textContent = problem;
    shown.hidden = false;
    area.setAttribute("aria-invalid", "true");
    area.focus();
  } else {
    shown.hidden = true;
    area.removeAttribute("aria-invalid");
  }
});

// Character Studio: the few behaviours htmx attributes cannot express. Everything here is an
// enhancement: without it the page still works through plain form posts.
(function () {
  "use strict";

  // Ctrl/Cmd+Enter in the prompt submits, unless a submission is already in flight (the
  // Generate button is disabled by hx-disabled-elt until the response arrives).
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    if (!target.matches || !target.matches("[data-submit-shortcut]")) return;
    event.preventDefault();
    var form = target.form;
    var button = form && form.querySelector("#generate-btn");
    if (!form || (button && button.disabled)) return;
    form.requestSubmit ? form.requestSubmit(button || undefined) : button.click();
  });

  // Batch mode turns Generate into "Add to batch"; the switch comes and goes with the model.
  function syncGenerateLabel() {
    var label = document.querySelector("[data-generate-label]");
    if (!label) return;
    var toggle = document.querySelector("[data-batch-toggle]");
    label.textContent = toggle && toggle.checked ? "Add to batch" : "Generate";
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("[data-batch-toggle]")) syncGenerateLabel();
  });
  document.addEventListener("htmx:afterSettle", syncGenerateLabel);

  // The strength slider shows its value as it moves.
  document.addEventListener("input", function (event) {
    var slider = event.target;
    if (!slider.matches || !slider.matches("input[type=range][data-output]")) return;
    var output = document.querySelector(slider.getAttribute("data-output"));
    if (output) output.textContent = Number(slider.value).toFixed(2);
  });

  // Plain forms that destroy something ask first (htmx buttons use hx-confirm).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Drag and drop into the reference slots: files from the desktop go through the upload input
  // (so they are validated like a picked file); gallery images are posted as "use as reference".
  var ASSET_TYPE = "application/x-studio-asset";

  document.addEventListener("dragstart", function (event) {
    var tile = event.target.closest && event.target.closest("[data-use-url]");
    if (!tile) return;
    event.dataTransfer.setData(ASSET_TYPE, tile.getAttribute("data-use-url"));
    event.dataTransfer.effectAllowed = "copy";
  });

  function dropzoneOf(event) {
    return event.target.closest && event.target.closest("[data-dropzone]");
  }

  document.addEventListener("dragover", function (event) {
    var zone = dropzoneOf(event);
    if (!zone) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("is-dragover");
  });

  document.addEventListener("dragleave", function (event) {
    var zone = dropzoneOf(event);
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("is-dragover");
  });

  document.addEventListener("drop", function (event) {
    var zone = dropzoneOf(event);
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("is-dragover");
    var useUrl = event.dataTransfer.getData(ASSET_TYPE);
    if (useUrl && window.htmx) {
      // source: an element inside the prompt form, so htmx posts the form's values with it.
      window.htmx.ajax("POST", useUrl, { source: zone, target: "#prompt-controls", swap: "outerHTML" });
      return;
    }
    var files = event.dataTransfer.files;
    var input = document.querySelector(zone.getAttribute("data-upload-input"));
    if (files && files.length && input) {
      var transfer = new DataTransfer();
      transfer.items.add(files[0]);
      input.files = transfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }
  });
})();

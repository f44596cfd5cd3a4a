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

  // The gallery's live stream (htmx's SSE extension, studio/live.py) ends with "idle" when no job
  // runs (sse-close). A running card that arrives later (Generate, Retry failed) connects it again:
  // before the card is swapped in, so the card's sse-swap finds the open stream. A card that
  // arrived just as the stream ended is connected the same way.
  var live = { open: false };

  function gallery() {
    return document.getElementById("gallery-jobs");
  }

  function connectLive() {
    var element = gallery();
    var url = element && element.getAttribute("data-live-url");
    if (!url || live.open || !window.htmx) return;
    live.open = true;
    // A new attribute value makes htmx process the element again, which opens a new EventSource;
    // each running card is marked too, so it registers with that one.
    live.generation = (live.generation || 0) + 1;
    if (live.lastEventId) url = url.replace(/since=[^&]*/, "since=" + live.lastEventId);
    element.setAttribute("sse-connect", url + "&connection=" + live.generation);
    element.querySelectorAll("[sse-swap]").forEach(function (card) {
      card.setAttribute("data-live-connection", String(live.generation));
    });
    window.htmx.process(element);
  }

  document.addEventListener("htmx:sseOpen", function (event) {
    if (event.target === gallery()) live.open = true;
  });

  // Where a new connection starts: after the last card this page received.
  document.addEventListener("htmx:sseMessage", function (event) {
    if (event.detail && event.detail.lastEventId) live.lastEventId = event.detail.lastEventId;
  });

  document.addEventListener("htmx:sseClose", function (event) {
    var element = gallery();
    if (event.target !== element || event.detail.type !== "message") return;
    live.open = false;
    element.removeAttribute("sse-connect");
    if (element.querySelector("[sse-swap]")) connectLive();
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var html = event.detail.serverResponse;
    if (event.detail.shouldSwap && typeof html === "string" && html.indexOf("sse-swap=") !== -1) connectLive();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var element = gallery();
    live.open = !!(element && element.hasAttribute("sse-connect"));
  });
})();

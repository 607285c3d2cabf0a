// Sluice user site: copy buttons and confirmations. No framework; pages work without it.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain http on a LAN has no Clipboard API: fall back to a selected textarea.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      try {
        document.execCommand("copy") ? resolve() : reject(new Error("copy refused"));
      } catch (error) {
        reject(error);
      } finally {
        document.body.removeChild(area);
      }
    });
  }

  // <button data-copy="text"> or <button data-copy-from="element-id">: copies, then says so.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy], [data-copy-from]");
    if (!button) return;
    event.preventDefault();
    var text = button.getAttribute("data-copy");
    if (text === null) {
      var source = document.getElementById(button.getAttribute("data-copy-from"));
      text = source ? (source.value !== undefined ? source.value : source.textContent) : "";
    }
    var label = button.textContent;
    copyText(text.trim()).then(function () {
      button.textContent = button.getAttribute("data-copied") || "Copied";
      button.setAttribute("data-state", "copied");
      setTimeout(function () {
        button.textContent = label;
        button.removeAttribute("data-state");
      }, 1500);
    }, function () {
      window.prompt(button.getAttribute("data-copy-prompt") || "Copy:", text.trim());
    });
  });

  // <form data-confirm="Are you sure?">: asks before submitting.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();

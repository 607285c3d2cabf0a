// The Logs page: fills in the totals for the filter, which the server sums in a request of
// their own so that the rows never wait for them.
(function () {
  "use strict";
  var box = document.getElementById("log-totals");
  if (!box) return;
  var numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);
  fetch(box.getAttribute("data-url"), { credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.json();
    })
    .then(function (totals) {
      box.querySelectorAll("[data-total]").forEach(function (cell) {
        var value = totals[cell.getAttribute("data-total")];
        cell.textContent = typeof value === "number" ? numbers.format(value) : String(value);
      });
      box.setAttribute("data-state", "ready");
    })
    .catch(function () {
      box.querySelectorAll("[data-total]").forEach(function (cell) { cell.textContent = "–"; });
      box.setAttribute("data-state", "failed");
    });
})();

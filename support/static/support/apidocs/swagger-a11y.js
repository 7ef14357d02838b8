/* /api/docs: names for the form controls Swagger UI renders without one (a parameter's select
   or input, the request body), and keyboard access to its scrolling code blocks; applied to
   whatever Swagger UI renders, as it renders it (axe-core: select-name, label,
   scrollable-region-focusable). */
(function () {
    "use strict";
    function name(el, text) {
        if (!el.hasAttribute("aria-label") && !el.labels?.length) el.setAttribute("aria-label", text);
    }
    function fix() {
        document.querySelectorAll("tr[data-param-name]").forEach(function (row) {
            row.querySelectorAll("select, input, textarea").forEach(function (el) {
                name(el, row.dataset.paramName + " (" + row.dataset.paramIn + ")");
            });
        });
        document.querySelectorAll(".body-param textarea").forEach(function (el) {
            name(el, "Request body");
        });
        document.querySelectorAll("#swagger-ui pre:not([tabindex])").forEach(function (el) {
            el.setAttribute("tabindex", "0");
        });
    }
    var pending = false;
    new MutationObserver(function () {
        if (pending) return;
        pending = true;
        requestAnimationFrame(function () {
            pending = false;
            fix();
        });
    }).observe(document.getElementById("swagger-ui"), {
        childList: true,
        subtree: true,
    });
})();

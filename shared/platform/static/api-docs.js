// Starts Swagger UI on /docs. FastAPI's own page starts it with an inline script, which the
// Content-Security-Policy refuses; this file is the service's own, and its settings (the OpenAPI
// document's URL and Swagger UI's parameters) come from the page's data-config attribute.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  var config = JSON.parse(root.dataset.config);
  config.presets = [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset];
  window.ui = SwaggerUIBundle(config);
})();

// Equations of the markdown pages (pymdownx.arithmatex, generic mode) with the MathJax 2 that the docs build
// copies from the jupyter-server-mathjax package into assets/mathjax/: no CDN, so it works offline.
// Notebook pages load the same MathJax through mkdocs-jupyter (custom_mathjax_url) with their own settings.
(function () {
  var self = document.currentScript;
  if (document.querySelector(".jupyter-wrapper") || (window.MathJax && window.MathJax.Hub)) return;
  window.MathJax = {
    tex2jax: {
      inlineMath: [["\\(", "\\)"]],
      displayMath: [["\\[", "\\]"]],
      processEscapes: true,
      processEnvironments: true,
      ignoreClass: ".*",
      processClass: "arithmatex"
    },
    messageStyle: "none",
    showMathMenu: false
  };
  var script = document.createElement("script");
  script.src = new URL("../assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full", self.src).href;
  document.head.appendChild(script);
})();

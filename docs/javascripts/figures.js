// Draw every Plotly figure of a page from its JSON, in the reader's scheme.
//
// Material swaps page content without a full load (navigation.instant), so
// figures are drawn from its document$ observable, not on DOMContentLoaded.
// plotly.min.js (the copy shipped with the installed plotly package) is
// loaded once, on the first page that has a figure. Figures follow the
// light/dark toggle and are resized when a hidden tab or block is opened.

(function () {
  "use strict";

  const PLOTLY_URL = new URL(
    "../assets/javascripts/plotly.min.js",
    document.currentScript.src,
  ).href;
  let plotlyReady = null;

  function loadPlotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyReady) {
      plotlyReady = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = PLOTLY_URL;
        script.onload = () => resolve(window.Plotly);
        script.onerror = () => reject(new Error("cannot load " + PLOTLY_URL));
        document.head.appendChild(script);
      });
    }
    return plotlyReady;
  }

  // colours of the current scheme, read from Material's own CSS variables
  function themeLayout() {
    const style = getComputedStyle(document.body);
    const read = (name, fallback) =>
      style.getPropertyValue(name).trim() || fallback;
    const text = read("--md-default-fg-color", "#000");
    const grid = read("--md-default-fg-color--lightest", "#ddd");
    const axis = { gridcolor: grid, zerolinecolor: grid, linecolor: grid,
                   tickcolor: grid, color: text };
    const layout = {
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: text, family: style.fontFamily },
      "legend.font.color": text,
      "hoverlabel.bgcolor": read("--md-default-bg-color", "#fff"),
      "hoverlabel.font.color": text,
    };
    for (const key of ["xaxis", "yaxis", "xaxis2", "yaxis2", "xaxis3", "yaxis3"]) {
      for (const [name, value] of Object.entries(axis)) {
        layout[key + "." + name] = value;
      }
    }
    return layout;
  }

  function annotationColours(div) {
    const text = getComputedStyle(document.body)
      .getPropertyValue("--md-default-fg-color").trim();
    const update = {};
    (div.layout.annotations || []).forEach((_, i) => {
      update["annotations[" + i + "].font.color"] = text;
    });
    return update;
  }

  // on a narrow screen: one legend column, smaller subplot titles
  function widthLayout(div) {
    const narrow = div.clientWidth < 560;
    const update = {};
    if (div.layout.legend && div.layout.legend.entrywidthmode === "fraction") {
      update["legend.entrywidth"] = narrow ? 1 : 0.5;
    }
    (div.layout.annotations || []).forEach((_, i) => {
      update["annotations[" + i + "].font.size"] = narrow ? 11 : 16;
    });
    div.dataset.narrow = narrow;
    return update;
  }

  async function draw(div) {
    if (div.dataset.state) return;
    div.dataset.state = "loading";
    try {
      const [Plotly, response] = await Promise.all([
        loadPlotly(),
        fetch(new URL(div.dataset.figure, document.baseURI)),
      ]);
      const figure = await response.json();
      const config = { responsive: true, displaylogo: false };
      await Plotly.newPlot(div, figure.data, figure.layout, config);
      await Plotly.relayout(div, {
        ...themeLayout(),
        ...annotationColours(div),
        ...widthLayout(div),
      });
      div.dataset.state = "drawn";
    } catch (error) {
      div.dataset.state = "failed";
      div.textContent = "This figure could not be drawn: " + error.message;
    }
  }

  // draw a figure once it has a width; resize it when it is shown again
  const sizes = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const div = entry.target;
      if (entry.contentRect.width === 0) continue;
      if (!div.dataset.state) draw(div);
      else if (div.dataset.state === "drawn") {
        window.Plotly.Plots.resize(div);
        if (String(div.clientWidth < 560) !== div.dataset.narrow) {
          window.Plotly.relayout(div, widthLayout(div));
        }
      }
    }
  });

  function restyleAll() {
    if (!window.Plotly) return;
    const layout = themeLayout();
    document.querySelectorAll(".cd-plot[data-state=drawn]").forEach((div) => {
      window.Plotly.relayout(div, { ...layout, ...annotationColours(div) });
    });
  }

  new MutationObserver(restyleAll).observe(document.body, {
    attributes: true,
    attributeFilter: ["data-md-color-scheme"],
  });

  function drawPage() {
    document.querySelectorAll(".cd-plot").forEach((div) => sizes.observe(div));
  }

  if (typeof document$ !== "undefined") document$.subscribe(drawPage);
  else document.addEventListener("DOMContentLoaded", drawPage);
})();

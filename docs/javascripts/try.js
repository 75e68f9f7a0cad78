// The "Try it" page: the trained models' forward pass in plain JavaScript.
//
// The weights come from assets/models.json, which the docs build exports from
// the training results (carrydemo/webexport.py). The arithmetic is PyTorch's:
//   MLP  hidden = relu(W1 x + b1); logits = W2 hidden + b2, 10 per digit
//   RNN  h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh); logits_t = W_o h_t + b_o
// with x the raw digit values 0..9, units first, and h_0 = 0. It runs in
// float64 on weights that are exactly PyTorch's float32 values.
//
// window.carrydemo.predict(model, a, b) returns the predicted sum as a string
// of digits, most significant first; window.carrydemo.ready resolves once the
// weights have loaded. The page is set up from Material's document$, so it
// also works after instant navigation.

(function () {
  "use strict";

  const MODELS_URL = new URL("../assets/models.json", document.currentScript.src);
  const MODEL_LABELS = { rnn: "RNN", mlp: "MLP" };
  const DIGITS = /^[0-9]+$/;
  // heat colours (r, g, b): probabilities; hidden state above and below zero
  const TEAL = "0, 150, 136";
  const ORANGE = "230, 97, 1";
  const BLUE = "33, 102, 172";

  const carrydemo = (window.carrydemo = window.carrydemo || {});
  let models = null;
  let loading = null;

  // loading the weights

  function loadModels() {
    if (!loading) {
      loading = fetch(MODELS_URL)
        .then(function (response) {
          if (!response.ok) {
            throw new Error("could not load " + MODELS_URL + ": " + response.status);
          }
          return response.json();
        })
        .then(function (data) {
          models = prepareModels(data);
          return models;
        });
    }
    return loading;
  }

  function prepareModels(data) {
    const prepared = { numDigits: data.num_digits, maxRnnDigits: data.max_rnn_digits };
    for (const name of Object.keys(data.models)) {
      const tensors = {};
      for (const [key, tensor] of Object.entries(data.models[name].tensors)) {
        tensors[key] = matrix(tensor);
      }
      prepared[name] = Object.assign({}, data.models[name], { tensors: tensors });
    }
    return prepared;
  }

  // A tensor as rows of float32 values (a vector is one row).
  function matrix(tensor) {
    const values = tensor.data.map(Math.fround);
    const columns = tensor.shape.length === 2 ? tensor.shape[1] : values.length;
    const rows = [];
    for (let start = 0; start < values.length; start += columns) {
      rows.push(values.slice(start, start + columns));
    }
    return rows;
  }

  // the arithmetic

  // weight @ x + bias, for weight as rows and bias as one row
  function affine(weight, bias, x) {
    return weight.map(function (row, i) {
      let total = bias[0][i];
      for (let j = 0; j < row.length; j++) total += row[j] * x[j];
      return total;
    });
  }

  function softmax(logits) {
    const top = Math.max.apply(null, logits);
    const exps = logits.map(function (value) { return Math.exp(value - top); });
    const total = exps.reduce(function (a, b) { return a + b; }, 0);
    return exps.map(function (value) { return value / total; });
  }

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  // Digit pairs, units first: [[a_0, b_0], [a_1, b_1], ...]
  function digitPairs(a, b) {
    const pairs = [];
    for (let t = 0; t < a.length; t++) {
      pairs.push([Number(a[a.length - 1 - t]), Number(b[b.length - 1 - t])]);
    }
    return pairs;
  }

  function runRnn(model, pairs) {
    const w = model.tensors;
    let hidden = new Array(model.hidden_size).fill(0);
    const steps = [];
    for (const x of pairs) {
      const fromInput = affine(w["rnn.weight_ih_l0"], w["rnn.bias_ih_l0"], x);
      const fromState = affine(w["rnn.weight_hh_l0"], w["rnn.bias_hh_l0"], hidden);
      hidden = fromInput.map(function (value, i) {
        return Math.tanh(value + fromState[i]);
      });
      const logits = affine(w["output.weight"], w["output.bias"], hidden);
      steps.push({ hidden: hidden, probabilities: softmax(logits) });
    }
    return steps;
  }

  function runMlp(model, pairs) {
    const w = model.tensors;
    const inputs = pairs.flat();
    const hidden = affine(w["hidden.weight"], w["hidden.bias"], inputs).map(function (v) {
      return Math.max(v, 0);
    });
    const logits = affine(w["output.weight"], w["output.bias"], hidden);
    return pairs.map(function (_, t) {
      return { probabilities: softmax(logits.slice(10 * t, 10 * t + 10)) };
    });
  }

  // checking the input

  function limitOf(name) {
    return name === "mlp" ? models.numDigits : models.maxRnnDigits;
  }

  // Return the two numbers padded with leading zeros to the length the model
  // reads, or throw an Error that says what is accepted.
  // ``labels`` name the two numbers in the messages ("a" and "b" by default).
  function checkedInput(name, a, b, labels) {
    if (!models) {
      throw new Error("the models have not loaded yet; await window.carrydemo.ready");
    }
    if (!Object.prototype.hasOwnProperty.call(MODEL_LABELS, name) || !models[name]) {
      throw new Error('unknown model "' + name + '"; choose "rnn" or "mlp"');
    }
    const limit = limitOf(name);
    const [labelA, labelB] = labels || ["a", "b"];
    for (const [label, value] of [[labelA, a], [labelB, b]]) {
      if (typeof value !== "string") {
        throw new Error(label + " must be a string of decimal digits, got " + typeof value);
      }
      if (value === "") throw new Error(label + " is empty; type a number");
      if (!DIGITS.test(value)) {
        const quoted = ' ("' + value + '")';
        throw new Error(label + quoted + " is not a number: use the digits 0 to 9 only");
      }
      if (value.length > limit) {
        throw new Error(
          label + " has " + value.length + " digits; the " + MODEL_LABELS[name] +
            " takes at most " + limit
        );
      }
    }
    const length = name === "mlp" ? limit : Math.max(a.length, b.length);
    return [a.padStart(length, "0"), b.padStart(length, "0")];
  }

  // Return the model's digits (most significant first) and every step's
  // probabilities and, for the RNN, hidden state (units first).
  function explain(name, a, b, labels) {
    const [paddedA, paddedB] = checkedInput(name, a, b, labels);
    const pairs = digitPairs(paddedA, paddedB);
    const steps = name === "rnn" ? runRnn(models.rnn, pairs) : runMlp(models.mlp, pairs);
    const digits = steps.map(function (step) { return argmax(step.probabilities); });
    return { a: paddedA, b: paddedB, steps: steps, digits: digits.slice().reverse().join("") };
  }

  carrydemo.predict = function (model, a, b) {
    return explain(model, a, b).digits;
  };
  Object.defineProperty(carrydemo, "ready", {
    configurable: true,
    get: function () { return loadModels(); },
  });

  // the page

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Column headings in the order the models read the digits: units first.
  function placeName(t) {
    const names = ["units", "tens", "hundreds", "thousands"];
    return t < names.length ? names[t] : "10^" + t;
  }

  // Heat as a translucent tint: at most 55% opaque so that the page's own text
  // colour stays readable on it in the light and the dark scheme.
  function tint(rgb, strength) {
    const alpha = (0.55 * Math.min(Math.abs(strength), 1)).toFixed(3);
    return "rgba(" + rgb + ", " + alpha + ")";
  }

  function heatTable(caption, rowLabels, columns, cell) {
    const table = element("table", { class: "carrydemo-heat", "aria-label": caption });
    const head = table.appendChild(element("thead")).appendChild(element("tr"));
    head.appendChild(element("th", { scope: "col" }, ""));
    columns.forEach(function (_, t) {
      head.appendChild(element("th", { scope: "col" }, placeName(t)));
    });
    const body = table.appendChild(element("tbody"));
    rowLabels.forEach(function (label, row) {
      const tr = body.appendChild(element("tr"));
      tr.appendChild(element("th", { scope: "row" }, label));
      columns.forEach(function (column, t) { tr.appendChild(cell(column, row, t)); });
    });
    const wrapper = element("div", { class: "carrydemo-scroll" });
    wrapper.appendChild(table);
    const figure = element("div", { class: "carrydemo-table" });
    figure.appendChild(element("p", { class: "carrydemo-caption" }, caption));
    figure.appendChild(wrapper);
    return figure;
  }

  function probabilityTable(name, result) {
    const rows = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    return heatTable(
      MODEL_LABELS[name] + ": probability of each digit (%), chosen digit outlined",
      rows,
      result.steps,
      function (step, digit) {
        const p = step.probabilities[digit];
        const percent = p >= 0.995 ? "100" : p < 0.005 ? "0" : (100 * p).toFixed(0);
        const td = element("td", { title: (100 * p).toFixed(2) + "%" }, percent);
        td.style.backgroundColor = tint(TEAL, p);
        if (digit === argmax(step.probabilities)) td.classList.add("carrydemo-chosen");
        return td;
      }
    );
  }

  function hiddenTable(result) {
    const units = result.steps[0].hidden.map(function (_, i) { return "h" + (i + 1); });
    return heatTable(
      "RNN: hidden state after reading each digit pair (orange > 0 > blue)",
      units,
      result.steps,
      function (step, unit, t) {
        const value = step.hidden[unit];
        const title = "h" + (unit + 1) + " after the " + placeName(t) + ": " + value.toFixed(4);
        const td = element("td", { title: title }, value.toFixed(2));
        td.style.backgroundColor = tint(value >= 0 ? ORANGE : BLUE, value);
        return td;
      }
    );
  }

  // The sum's last n digits, exactly (BigInt: the RNN takes 30-digit numbers).
  function lastDigitsOfSum(a, b, n) {
    return (BigInt(a) + BigInt(b)).toString().padStart(n, "0").slice(-n);
  }

  function answerLine(result) {
    const n = result.digits.length;
    const exact = lastDigitsOfSum(result.a, result.b, n);
    const verdict = exact === result.digits ? "right" : "wrong";
    const line = element("p", { class: "carrydemo-answer" });
    line.append(
      result.a + " + " + result.b + " → ",
      element("strong", { class: "carrydemo-digits" }, result.digits),
      " (" + verdict + "; the last " + n + " digits of the sum are " + exact + ")"
    );
    return line;
  }

  function modelSection(name, a, b) {
    const section = element("section", { class: "carrydemo-model", "data-model": name });
    section.appendChild(element("h3", {}, MODEL_LABELS[name]));
    let result;
    try {
      result = explain(name, a, b, ["The first number", "The second number"]);
    } catch (error) {
      const message = { class: "carrydemo-message", role: "status" };
      section.appendChild(element("p", message, error.message));
      return section;
    }
    section.appendChild(answerLine(result));
    section.appendChild(probabilityTable(name, result));
    if (name === "rnn") section.appendChild(hiddenTable(result));
    return section;
  }

  function render(form) {
    const output = form.parentNode.querySelector(".carrydemo-output");
    const a = form.elements.a.value.trim();
    const b = form.elements.b.value.trim();
    output.replaceChildren();
    if (!models) {
      output.appendChild(element("p", { class: "carrydemo-message" }, "Loading the models."));
      return;
    }
    // long numbers need the full width: the models go one under the other
    output.classList.toggle("carrydemo-stacked", Math.max(a.length, b.length) > 6);
    for (const name of ["rnn", "mlp"]) output.appendChild(modelSection(name, a, b));
  }

  function showLimits(root) {
    for (const node of root.querySelectorAll("[data-carrydemo-limit]")) {
      node.textContent = limitOf(node.getAttribute("data-carrydemo-limit"));
    }
  }

  function setUp(root) {
    const form = root.querySelector("form.carrydemo-try");
    if (!form || form.dataset.ready) return;
    form.dataset.ready = "yes";
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      render(form);
    });
    form.addEventListener("input", function () { render(form); });
    render(form);
    loadModels().then(
      function () {
        showLimits(root);
        render(form);
      },
      function (error) {
        const output = form.parentNode.querySelector(".carrydemo-output");
        output.replaceChildren(element("p", { class: "carrydemo-message" }, error.message));
      }
    );
  }

  if (typeof document$ !== "undefined") {
    document$.subscribe(function () { setUp(document); });
  } else {
    document.addEventListener("DOMContentLoaded", function () { setUp(document); });
  }
})();

/**
 * A horizontal bar chart as a standalone SVG: no dependency, readable in a
 * browser and on GitHub, so the README can show the benchmark at a glance.
 */

export interface Bar {
  readonly label: string
  readonly value: number
  /** Drawn in the accent colour: the bar the chart is about. */
  readonly highlight?: boolean
}

const escape = (text: string): string =>
  text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;")

const formatValue = (value: number): string =>
  value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value >= 1 ? value.toFixed(2) : value.toFixed(3)

/** Bars on a linear scale from zero, each labelled with its value and unit. */
export const barChart = (options: {
  readonly title: string
  readonly subtitle: string
  readonly unit: string
  readonly bars: ReadonlyArray<Bar>
}): string => {
  const width = 760
  const labelWidth = 300
  const barArea = width - labelWidth - 110
  const rowHeight = 30
  const top = 64
  const height = top + options.bars.length * rowHeight + 16
  const max = Math.max(...options.bars.map((bar) => bar.value), Number.MIN_VALUE)
  const rows = options.bars.map((bar, i) => {
    const y = top + i * rowHeight
    const length = Math.max(1, (bar.value / max) * barArea)
    return [
      `<text x="${labelWidth - 10}" y="${y + 19}" text-anchor="end">${escape(bar.label)}</text>`,
      `<rect x="${labelWidth}" y="${y + 5}" width="${length.toFixed(1)}" height="20" rx="3" fill="${bar.highlight === true ? "#3451b2" : "#9aa4b8"}"/>`,
      `<text x="${(labelWidth + length + 8).toFixed(1)}" y="${y + 19}">${formatValue(bar.value)} ${escape(options.unit)}</text>`
    ].join("")
  })
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="13" fill="#1d2330" role="img" aria-label="${escape(options.title)}">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="16" y="26" font-size="16" font-weight="700">${escape(options.title)}</text>`,
    `<text x="16" y="46" fill="#5d6678">${escape(options.subtitle)}</text>`,
    ...rows,
    "</svg>",
    ""
  ].join("\n")
}

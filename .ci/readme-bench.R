# Writes the README's headline table of benchmark ratios, between the
# markers <!-- bench:headline --> and <!-- /bench -->, from the rows that
# inst/bench/bench.R saved for 2 and 10 workers (results-size2.csv,
# results-size10.csv). A ratio is the peer's time / bgpool's time: above 1,
# bgpool is faster.
sizes <- c(2L, 10L)
rows <- lapply(sizes, function(n) {
  file <- sprintf("inst/bench/results-size%d.csv", n)
  if (file.exists(file)) utils::read.csv(file, stringsAsFactors = FALSE)
})
names(rows) <- sizes
# (workload shown, the bgpool row's key, the peer's backend)
headline <- list(
  c("start: init_pool() + first call", "W1", "parallel PSOCK"),
  c("10,000 tiny tasks: pool_lapply", "W2:lapply", "parallel PSOCK"),
  c("100,000 tiny tasks: pool_lapply", "W2:lapply_big", "parallel PSOCK"),
  c("10,000 tiny tasks: pool_map", "W2:map", "parallel PSOCK"),
  c("10,000 tiny tasks: pool_map", "W2:map", "mirai"),
  c("round trip, 1 worker: pool_call", "W3:1", "parallel PSOCK"),
  c("round trip, 1 worker: pool_call", "W3:1", "mirai"),
  c("round trip, 1 worker: pool_call", "W3:1", "C program"),
  c("broadcast: pool_export", "W4", "parallel PSOCK"),
  c("gather 10 x 40 MB: pool_lapply", "W5", "parallel PSOCK"),
  c("gather 10 x 40 MB: pool_lapply", "W5", "mirai"),
  c("cluster: parLapply on pool_cluster()", "W7:parLapply", "parallel PSOCK"),
  c("cluster: clusterCall on pool_cluster()", "W7:call", "parallel PSOCK"),
  c("cluster: clusterExport on pool_cluster()", "W7:export", "parallel PSOCK"))
peer_label <- c("parallel PSOCK" = "`parallel` PSOCK", mirai = "mirai", "C program" = "the C floor (a socket pair ping-pong)")
cell <- function(n, key, backend) {
  d <- rows[[as.character(n)]]
  if (is.null(d)) return("—")
  hit <- d[d$ref == key & d$backend == backend, ]
  if (!nrow(hit) || is.na(hit$ratio[1])) return("—")
  ratio <- hit$ratio[1]
  text <- if (ratio >= 10) sprintf("%.0fx", ratio) else sprintf("%.2gx", ratio)
  if (nzchar(hit$met[1])) sprintf("%s (%s)", text, if (hit$met[1] == "yes") "target met" else "target missed") else text
}
table <- c(sprintf("| workload | against | %s |", paste(sprintf("%d workers", sizes), collapse = " | ")),
           sprintf("|---|---|%s", paste(rep("---|", length(sizes)), collapse = "")),
           vapply(headline, function(h) sprintf("| %s | %s | %s |", h[1], peer_label[[h[3]]],
                                                paste(vapply(sizes, cell, "", key = h[2], backend = h[3]),
                                                      collapse = " | ")), ""))
readme <- readLines("README.md")
start <- grep("^<!-- bench:headline -->$", readme)
end <- start + match("<!-- /bench -->", readme[-seq_len(start)])
if (length(start) == 1L && !is.na(end))
  writeLines(c(readme[seq_len(start)], table, readme[end:length(readme)]), "README.md")

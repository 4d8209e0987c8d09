# Copies the generated benchmark tables into README.md, between the
# markers <!-- bench:FILE --> and <!-- /bench -->, FILE in inst/bench/.
readme <- readLines("README.md")
starts <- grep("^<!-- bench:.+ -->$", readme)
for (start in rev(starts)) {
  file <- file.path("inst/bench", sub("^<!-- bench:(.+) -->$", "\\1", readme[start]))
  end <- start + match("<!-- /bench -->", readme[-seq_len(start)])
  if (!file.exists(file) || is.na(end)) next
  readme <- c(readme[seq_len(start)], readLines(file), readme[end:length(readme)])
}
writeLines(readme, "README.md")

# Time lme4::lmer on one case; prints one JSON line (the last line of stdout).
#
#   Rscript bench/lme4_runner.R DATA FORMULA REML REPEATS GROUPS [FACTORS] [BUDGET]
#
# DATA is a CSV, read with read.csv; the GROUPS and FACTORS columns (comma-separated)
# become factors before any timing.  Each fit is timed with system.time (elapsed) around
# lmer() with lme4's default optimizer (nloptwrap); the median of the repeats is
# reported, with no further repeat once BUDGET seconds (default 30) are spent.
# objective = REMLcrit(f) or deviance(f); evals = f@optinfo$feval.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

split_cols <- function(s) {
  if (is.na(s) || !nzchar(s)) character(0) else strsplit(s, ",", fixed = TRUE)[[1]]
}

load_data <- function(path, cols) {
  d <- read.csv(path)
  for (c in cols) d[[c]] <- factor(d[[c]])
  d
}

timed_fits <- function(fit, repeats, budget) {
  times <- numeric(0)
  res <- NULL
  while (length(times) < repeats) {
    t <- system.time(res <- fit())[["elapsed"]]
    times <- c(times, t)
    if (sum(times) + t > budget) break
  }
  list(times = times, fit = res)
}

blas_name <- function() {
  si <- sessionInfo()
  if (!is.null(si$BLAS)) si$BLAS else NA_character_
}

main <- function() {
  args <- commandArgs(trailingOnly = TRUE)
  path <- args[1]
  form <- as.formula(args[2])
  reml <- args[3] == "1"
  repeats <- as.integer(args[4])
  cols <- c(split_cols(args[5]), split_cols(args[6]))
  budget <- if (length(args) >= 7) as.numeric(args[7]) else 30
  d <- load_data(path, cols)
  msgs <- character(0)
  r <- withCallingHandlers(
    timed_fits(function() lmer(form, data = d, REML = reml), repeats, budget),
    warning = function(w) {
      msgs <<- unique(c(msgs, conditionMessage(w)))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      msgs <<- unique(c(msgs, trimws(conditionMessage(m))))
      invokeRestart("muffleMessage")
    }
  )
  f <- r$fit
  obj <- if (reml) REMLcrit(f) else deviance(f)
  conv <- f@optinfo$conv$lme4$messages
  out <- list(
    system = "lme4",
    version = as.character(packageVersion("lme4")),
    r = R.version.string,
    times = I(r$times),  # a JSON array even for one repeat
    time = median(r$times),
    objective = obj,
    evals = f@optinfo$feval,
    theta = I(unname(getME(f, "theta"))),
    optimizer = f@optinfo$optimizer,
    warnings = head(c(msgs, conv), 3),
    blas = blas_name()
  )
  cat(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null"), "\n")
}

main()

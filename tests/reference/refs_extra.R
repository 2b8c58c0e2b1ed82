# Extra lme4 references for lmmfast: summary() printouts and fits with weights, offsets and
# categorical fixed effects, which refs_lme4.json does not cover.
# usage (from this folder): Rscript refs_extra.R ../../lmmfast/datasets
# writes: summaries/<id>.txt (print(summary(fit)) under options(width = 80)),
#         summaries/<id>_satterthwaite.txt (lmerTest's summary, for the REML fits listed below)
#         and refs_extra.json
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
dd <- commandArgs(trailingOnly = TRUE)[1]
rd <- function(name, factors = character()) {
  d <- read.csv(file.path(dd, paste0(name, ".csv")), stringsAsFactors = TRUE)
  for (v in factors) d[[v]] <- factor(d[[v]])
  d
}
RIKZ <- rd("RIKZ", "Beach"); sleepstudy <- rd("sleepstudy", "Subject")
Dyestuff <- rd("Dyestuff"); Dyestuff2 <- rd("Dyestuff2"); Penicillin <- rd("Penicillin")
Pastes <- rd("Pastes"); cake <- rd("cake", "replicate")
n <- nrow(sleepstudy)
sleepstudy$w <- 0.5 + (seq_len(n) %% 4) / 2          # prior weights 0.5, 1, 1.5, 2
sleepstudy$o <- (seq_len(n) %% 5) - 2                # offset -2..2
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))
models <- list(
  rikz_int_reml = quote(lme4::lmer(Richness ~ NAP + (1 | Beach), data = RIKZ, control = ctrl)),
  rikz_int_ml = quote(lme4::lmer(Richness ~ NAP + (1 | Beach), data = RIKZ, REML = FALSE, control = ctrl)),
  rikz_slope_ml = quote(lme4::lmer(Richness ~ NAP + (NAP | Beach), data = RIKZ, REML = FALSE, control = ctrl)),
  sleep_slope_reml = quote(lme4::lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, control = ctrl)),
  sleep_uncorr_reml = quote(lme4::lmer(Reaction ~ Days + (Days || Subject), data = sleepstudy, control = ctrl)),
  dyestuff_reml = quote(lme4::lmer(Yield ~ 1 + (1 | Batch), data = Dyestuff, control = ctrl)),
  dyestuff2_singular_reml = quote(lme4::lmer(Yield ~ 1 + (1 | Batch), data = Dyestuff2, control = ctrl)),
  penicillin_crossed_reml = quote(lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = Penicillin, control = ctrl)),
  pastes_nested_reml = quote(lme4::lmer(strength ~ 1 + (1 | batch/cask), data = Pastes, control = ctrl)),
  cake_interaction_reml = quote(lme4::lmer(angle ~ recipe * temp + (1 | recipe:replicate), data = cake, control = ctrl)),
  sleep_weights_reml = quote(lme4::lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, weights = w, control = ctrl)),
  sleep_weights_ml = quote(lme4::lmer(Reaction ~ Days + (1 | Subject), data = sleepstudy, weights = w, REML = FALSE, control = ctrl)),
  sleep_offset_reml = quote(lme4::lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, offset = o, control = ctrl))
)
dir.create("summaries", showWarnings = FALSE)
options(width = 80)
res <- list()
for (id in names(models)) {
  f <- eval(models[[id]])
  writeLines(capture.output(print(summary(f))), file.path("summaries", paste0(id, ".txt")))
  if (id %in% c("rikz_int_reml", "sleep_slope_reml", "penicillin_crossed_reml", "cake_interaction_reml", "rikz_slope_ml"))
    writeLines(capture.output(print(summary(as_lmerModLmerTest(f), ddf = "Satterthwaite"))),
               file.path("summaries", paste0(id, "_satterthwaite.txt")))
  res[[id]] <- list(call = deparse(models[[id]], width.cutoff = 500L), REML = isREML(f),
    objective = if (isREML(f)) REMLcrit(f) else deviance(f),
    theta = I(unname(getME(f, "theta"))), beta = as.list(fixef(f)),
    se = as.list(sqrt(diag(as.matrix(vcov(f))))), sigma = sigma(f),
    loglik = as.numeric(logLik(f)), fitted = unname(fitted(f)))
}
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE), "refs_extra.json")
cat("wrote refs_extra.json and summaries/\n")

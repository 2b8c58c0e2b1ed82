# References for lmmfast's presentation layer (issue 10): lmerTest's anova() tables (types 1, 2, 3;
# Satterthwaite and Kenward-Roger), ranova(), contest(); and the numbers broom.mixed's tidy(),
# glance() and augment() report, computed with the lme4 / lmerTest functions broom.mixed calls
# (broom.mixed itself is not installed here): coef(summary()), as.data.frame(VarCorr(),
# order = "lower.tri"), as.data.frame(ranef(condVar = TRUE)), coef(), logLik(), AIC(), BIC(),
# REMLcrit() / deviance(), df.residual(), fitted(), residuals(), predict(re.form = NA),
# hatvalues(), cooks.distance().
# usage (from this folder): Rscript refs_present.R ../../lmmfast/datasets   -> refs_present.json
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
dd <- commandArgs(trailingOnly = TRUE)[1]
rd <- function(name, factors = character()) {
  d <- read.csv(file.path(dd, paste0(name, ".csv")), stringsAsFactors = TRUE)
  for (v in factors) d[[v]] <- factor(d[[v]])
  d
}
# derived factors: the same definitions are in tests/test_anova.py (_data)
sleepstudy <- rd("sleepstudy", "Subject")
sleepstudy$grp <- factor(ifelse(as.integer(sleepstudy$Subject) <= 9, "a", "b"))
sleepstudy$period <- factor(paste0("p", sleepstudy$Days %/% 3))
cake <- rd("cake", "replicate")
cake$temperature <- factor(as.character(cake$temperature))
RIKZ <- rd("RIKZ", "Beach")
RIKZ$fExp <- factor(as.character(RIKZ$Exposure))
Pastes <- rd("Pastes")
Penicillin <- rd("Penicillin")
Penicillin$sgrp <- factor(ifelse(Penicillin$sample %in% c("A", "B", "C"), "s1", "s2"))
Penicillin$pgrp <- factor(ifelse(Penicillin$plate %in% letters[1:8], "p1",
                          ifelse(Penicillin$plate %in% letters[9:16], "p2", "p3")))
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))
models <- list(
  cake_factorial = quote(lmer(angle ~ recipe * temperature + (1 | recipe:replicate), data = cake, control = ctrl)),
  cake_numeric = quote(lmer(angle ~ recipe * temp + (1 | recipe:replicate), data = cake, control = ctrl)),
  cake_numeric_ml = quote(lmer(angle ~ recipe * temp + (1 | recipe:replicate), data = cake, REML = FALSE, control = ctrl)),
  rikz_exposure = quote(lmer(Richness ~ NAP * fExp + (1 | Beach), data = RIKZ, control = ctrl)),
  rikz_exposure_sum = quote(lmer(Richness ~ NAP * fExp + (1 | Beach), data = RIKZ, contrasts = list(fExp = "contr.sum"), control = ctrl)),
  sleep_group = quote(lmer(Reaction ~ Days * grp + (Days | Subject), data = sleepstudy, control = ctrl)),
  sleep_uncorrelated = quote(lmer(Reaction ~ Days + (Days || Subject), data = sleepstudy, control = ctrl)),
  sleep_period = quote(lmer(Reaction ~ period + (1 | Subject), data = sleepstudy, control = ctrl)),
  pastes_cask = quote(lmer(strength ~ cask + (1 | batch/cask), data = Pastes, control = ctrl)),
  penicillin_groups = quote(lmer(diameter ~ sgrp * pgrp + (1 | plate) + (1 | sample), data = Penicillin, control = ctrl))
)
tab <- function(a) {
  a <- as.data.frame(a)
  out <- lapply(a, function(col) unname(col))
  out$rownames <- rownames(a)
  out
}
res <- list(anova = list(), ranova = list(), contest = list(), broom = list())
for (id in names(models)) {
  f <- eval(models[[id]])
  entry <- list(call = deparse(models[[id]], width.cutoff = 500L), REML = isREML(f),
                theta = I(unname(getME(f, "theta"))), objective = if (isREML(f)) REMLcrit(f) else deviance(f))
  for (type in c("1", "2", "3")) {
    entry[[paste0("satterthwaite_", type)]] <- tab(anova(f, type = type, ddf = "Satterthwaite"))
    if (isREML(f))
      entry[[paste0("kenward-roger_", type)]] <- tab(anova(f, type = type, ddf = "Kenward-Roger"))
  }
  res$anova[[id]] <- entry
}
for (id in c("sleep_group", "sleep_uncorrelated", "penicillin_groups", "pastes_cask", "cake_numeric",
             "cake_numeric_ml")) {
  f <- eval(models[[id]])
  res$ranova[[id]] <- tab(ranova(f))
}
f <- eval(models$sleep_group)
L1 <- c(0, 1, 0, 1)            # Days + Days:grpb: the slope in group b
L2 <- rbind(c(0, 1, 0, 0), c(0, 0, 1, 1))
L3 <- rbind(c(0, 0, 1, 0), c(0, 0, 0, 1), c(0, 0, 1, 1))  # rank 2
res$contest$sleep_group <- list(theta = I(unname(getME(f, "theta"))),
  L1 = L1, L2 = L2, L3 = L3,
  L1_joint = tab(contest(f, L1)), L1_t = tab(contest(f, L1, joint = FALSE)),
  L2_joint = tab(contest(f, L2)), L2_kr = tab(contest(f, L2, ddf = "Kenward-Roger")),
  L1_t_kr = tab(contest(f, L1, joint = FALSE, ddf = "Kenward-Roger")),
  L3_joint = tab(contest(f, L3)),
  L2_rhs = tab(contest(f, L2, rhs = c(10, 5))))
# broom.mixed's numbers
sleepstudy$w <- 0.5 + (seq_len(nrow(sleepstudy)) %% 4) / 2
bmodels <- list(
  sleep_slope = quote(lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, control = ctrl)),
  sleep_slope_ml = quote(lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE, control = ctrl)),
  sleep_weights = quote(lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, weights = w, control = ctrl)),
  penicillin_crossed = quote(lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = Penicillin, control = ctrl)),
  pastes_nested = quote(lmer(strength ~ 1 + (1 | batch/cask), data = Pastes, control = ctrl)),
  cake_numeric = models$cake_numeric
)
for (id in names(bmodels)) {
  f <- eval(bmodels[[id]])
  vc <- as.data.frame(VarCorr(f), order = "lower.tri")
  rv <- as.data.frame(ranef(f, condVar = TRUE))
  cf <- coef(f)
  rc <- do.call(rbind, lapply(names(cf), function(g) {
    m <- as.matrix(cf[[g]])
    data.frame(group = g, level = rep(rownames(m), ncol(m)), term = rep(colnames(m), each = nrow(m)),
               estimate = c(m))
  }))
  e <- list(call = deparse(bmodels[[id]], width.cutoff = 500L), REML = isREML(f),
    theta = I(unname(getME(f, "theta"))),
    fixed = tab(coef(summary(as(f, "lmerMod")))),
    fixed_satterthwaite = tab(coef(summary(f, ddf = "Satterthwaite"))),
    ran_pars = list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, sdcor = vc$sdcor),
    ran_vals = list(group = as.character(rv$grpvar), term = as.character(rv$term), level = as.character(rv$grp),
                    estimate = rv$condval, std.error = rv$condsd),
    ran_coefs = as.list(rc),
    glance = list(nobs = nobs(f), sigma = sigma(f), logLik = as.numeric(logLik(f)), AIC = AIC(f), BIC = BIC(f),
                  deviance = suppressWarnings(deviance(f)), df.residual = df.residual(f)),
    augment = list(.fitted = unname(fitted(f)), .resid = unname(residuals(f)),
                   .fixed = unname(predict(f, re.form = NA)), .hat = unname(hatvalues(f)),
                   .cooksd = unname(cooks.distance(f))))
  if (isREML(f)) e$fixed_kr <- tab(coef(summary(f, ddf = "Kenward-Roger")))
  lw <- lowess(fitted(f), residuals(f, type = "pearson"))  # the smoother of the residual plot
  e$lowess <- list(x = lw$x, y = lw$y)
  e$confint_wald <- tab(confint(f, method = "Wald", parm = "beta_"))
  res$broom[[id]] <- e
}
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, na = "null"), "refs_present.json")
cat("wrote refs_present.json\n")

echo started
sleep ${SL_STAGE_VARIABLES_SECONDS}
echo slept

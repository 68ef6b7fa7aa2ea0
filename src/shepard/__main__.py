from shepard.cli.launch import run

run()

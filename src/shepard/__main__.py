from shepard.cli.main import run

run()
